// vlm-test-hooks: the vlm command line with the test seams set from variables that only this
// binary reads — the tests reach a job's or the worker's moments through it, and no user's vlm
// process reads them.
//
//   VLM_TEST_PAUSE_AFTER_UNITS=N   a batch job says "vlm: test: paused after unit N" on stderr
//                                  after recording unit N, then sleeps (for a kill at a known point)
//   VLM_TEST_CRASH_ON_ID=ID        the worker aborts on a window holding a request with this id
//   VLM_OVERLAP_UNITS=0            a job prepares the next unit only after the model is done
//                                  (the balance experiment of BENCHMARKS.md §6)

import Foundation
import VLMCLI
import VLMEmbed
import VLMIO
import VLMJobs

let environment = ProcessInfo.processInfo.environment
if let n = environment["VLM_TEST_PAUSE_AFTER_UNITS"].flatMap({ Int($0) }) {
    JobSeams.afterUnit = { unit in
        guard unit == n else { return }
        writeStandardError("vlm: test: paused after unit \(n)\n")
        while true { sleep(60) }
    }
}
if let id = environment["VLM_TEST_CRASH_ON_ID"] {
    WorkerSeams.beforeAnswering = { requests in
        if requests.contains(where: { $0.id == .string(id) }) { abort() }
    }
}
if environment["VLM_OVERLAP_UNITS"] == "0" { JobSeams.overlapUnits = false }
await VLM.runCommandLine()
