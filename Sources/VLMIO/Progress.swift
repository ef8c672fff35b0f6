// The one progress reporter: on a terminal a bar redrawn at most ten times a second, otherwise
// a plain line every ten seconds (a log file must not fill with carriage returns). Jobs count
// items; downloads count bytes.

import Foundation

public final class ProgressReporter {
    public let total: Int?
    public let quiet: Bool
    let tty: Bool
    /// The part before the rate: "12/100 images" or "model.safetensors: 12.0 MB of 90.4 MB".
    let describe: (_ done: Int) -> String
    /// The rate: "31.5/s" or "4.2 MB/s".
    let rate: (_ perSecond: Double) -> String
    private var startTime = Date()
    private var startDone = 0
    private var lastPrint = Date.distantPast
    private var printed = false

    public init(total: Int?, quiet: Bool, describe: @escaping (Int) -> String,
                rate: @escaping (Double) -> String = { String(format: "%.1f/s", $0) }) {
        self.total = total
        self.quiet = quiet
        tty = isatty(2) != 0
        self.describe = describe
        self.rate = rate
    }

    /// Items of a job: "done/total unit".
    public convenience init(items total: Int, unit: String, quiet: Bool) {
        self.init(total: total, quiet: quiet, describe: { "\($0)/\(total) \(unit)" })
    }

    public func start(at done: Int) {
        startTime = Date()
        startDone = done
        if !tty { lastPrint = startTime }   // the first plain line after ten seconds
    }

    func line(done: Int, failures: Int) -> String {
        let elapsed = Date().timeIntervalSince(startTime)
        let perSecond = elapsed > 0 ? Double(done - startDone) / elapsed : 0
        var s = describe(done) + ", " + rate(perSecond)
        if let total { s += ", ETA " + formatDuration(perSecond > 0 ? Double(total - done) / perSecond : .infinity) }
        if failures > 0 { s += ", \(failures) skipped" }
        return s
    }

    public func update(done: Int, failures: Int = 0) {
        guard !quiet else { return }
        let now = Date()
        if tty {
            guard now.timeIntervalSince(lastPrint) >= 0.1 || done == total else { return }
            var bar = ""
            if let total {
                let width = 30, filled = total > 0 ? min(width, width * done / total) : width
                bar = "[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] "
            }
            writeStandardError("\r" + bar + line(done: done, failures: failures) + "\u{1B}[K")
        } else if now.timeIntervalSince(lastPrint) >= 10 {
            writeStandardError("vlm: " + line(done: done, failures: failures) + "\n")
        } else {
            return
        }
        lastPrint = now
        printed = true
    }

    /// Clears the bar; `summary` (e.g. "done: 100/100 images in 12s") is printed as a line
    /// when progress was shown (a job quick enough to show none stays silent, as a shell
    /// script calling vlm once per line wants).
    public func finish(summary: String?) {
        guard !quiet, printed else { return }
        if tty { writeStandardError("\r\u{1B}[K") }
        if let summary { writeStandardError("vlm: " + summary + "\n") }
    }

    public var elapsed: Double { Date().timeIntervalSince(startTime) }
}

/// "3s", "4m05s", "2h07m"; "?" for an unknown time.
public func formatDuration(_ s: Double) -> String {
    if !s.isFinite || s > 1e9 { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
    if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
    return "\(t)s"
}
