// The vlm command line: subcommands, the exit codes, and the one place errors become a line on
// stderr ("vlm: error: <file>: <problem>") and an exit code.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO

/// Exit codes, listed in `vlm --help` and the README.
enum ExitStatus: Int32 {
    case success = 0
    /// Bad input, model or output: one line on stderr names it.
    case failure = 1
    /// Finished, but some items were skipped and recorded.
    case partial = 2
    /// Unknown option, missing or invalid argument (also an invalid VLM_* variable).
    case usage = 64
}

/// Ends a command with `status` (after its output is complete).
struct Finished: Error {
    let status: ExitStatus
}


let exitCodesHelp = """
EXIT CODES:
  0   success
  1   error: bad input, model or output (one line on stderr names it)
  2   finished, but some items were skipped (stderr, <output>.errors.jsonl)
  64  usage error: bad option or argument, or an invalid VLM_* variable

Data goes to stdout only; errors, warnings and progress to stderr only. "-" means stdin or
stdout for files read once or written (texts, lists, images, arrays, outputs); checkpoints and
vlm pca's feature files must be files. Shell completions: vlm --generate-completion-script bash|zsh|fish
"""

/// Help text as paragraphs: the lines of each paragraph joined with spaces, so ArgumentParser
/// wraps it once to the terminal's width (at 80 columns, or off a terminal, lines wrapped in the
/// source were wrapped again). Blank lines, indented lines (tables) and a line ending in ":"
/// keep their breaks.
func paragraphs(_ text: String) -> String {
    var out = ""
    var joinNext = false
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let indented = line.first == " " || line.first == "\t"
        if line.isEmpty || indented || !joinNext {
            if !out.isEmpty { out += "\n" }
        } else {
            out += " "
        }
        out += line
        joinNext = !line.isEmpty && !indented && !line.hasSuffix(":")
    }
    return out
}

public struct VLM: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "vlm",
        abstract: "Images and texts to feature vectors on the CPU (ResNet + BERT over OpenBLAS).",
        discussion: paragraphs(exitCodesHelp),
        version: "0.2.0",
        subcommands: [EmbedImage.self, EmbedText.self, Fuse.self, Classify.self, PreprocessCommand.self, Tokenize.self,
                      Similarity.self, PCACommand.self, Inspect.self, Convert.self, Bench.self, ModelsCommand.self, WorkerCommand.self, ServeCommand.self]
    )

    /// Parses and runs a command; `vlm serve` is asynchronous (an AsyncParsableCommand on
    /// Swift's concurrency), the other commands run on the main thread as they are. On the main
    /// actor, so they do: a blocking command on one of Swift's few cooperative threads (one, on
    /// a one-CPU machine) could starve the tasks it waits for.
    @MainActor
    public static func runCommandLine() async {
        reexecWithBetterBLASKernels()   // opens nothing that outlives it, so closed streams stay closed
        guardStandardStreams()
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var served = command as? AsyncParsableCommand {
                try await served.run()
            } else {
                var c = command
                try c.run()
            }
        } catch let done as Finished {
            Foundation.exit(done.status.rawValue)
        } catch let error as OptionError {
            fail(error.description, status: .usage)
        } catch let error as VLMError {
            fail(error.description, status: .failure)
        } catch let error as ValidationError {
            fail(error.message, status: .usage)
        } catch {
            // Help, completion scripts and usage errors that ArgumentParser raises while running.
            if exitCode(for: error) != .failure { exit(withError: error) }
            fail("\(error)", status: .failure)
        }
    }

    static func fail(_ message: String, status: ExitStatus) -> Never {
        writeStandardError("vlm: error: " + oneLine(message) + "\n")
        Foundation.exit(status.rawValue)
    }
}

/// When OpenBLAS picked generic kernels on a CPU that runs far faster ones, start again with
/// OPENBLAS_CORETYPE set (it is read once, at library load). At most once; never overrides a
/// value already set; VLM_OPENBLAS_CORETYPE=keep turns it off.
func reexecWithBetterBLASKernels() {
    let env = ProcessInfo.processInfo.environment
    guard env["VLM_REEXECUTED"] == nil, let core = OpenBLASCore.recommendedCoreType(environment: env) else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("VLM_REEXECUTED", "1", 1)
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
    argv.append(nil)
    // The binary's own path, not /proc/self/exe: the kernel names the process after the file
    // executed, and ps, top and /proc/PID/comm would show "exe".
    if let real = realpath("/proc/self/exe", nil) {
        execv(real, argv)
        free(real)
    }
    execv("/proc/self/exe", argv)
    // execv returned: it failed; run on with the kernels we have.
    unsetenv("OPENBLAS_CORETYPE")
}

func note(_ message: String) { writeStandardError(message + "\n") }

/// A message as one line no terminal acts on: newlines become spaces; other control characters
/// (C0, DEL, C1, the Unicode line and paragraph separators) — which a file's own bytes, such as
/// a pickle's global name, can carry — are written as \u{…}.
func oneLine(_ message: String) -> String {
    var out = String.UnicodeScalarView()
    for u in message.unicodeScalars {
        switch u.value {
        case 0x0A: out.append(" ")
        case 0..<0x20, 0x7F...0x9F, 0x2028, 0x2029:
            out.append(contentsOf: "\\u{\(String(u.value, radix: 16))}".unicodeScalars)
        default: out.append(u)
        }
    }
    return String(out)
}
