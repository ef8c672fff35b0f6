// The vlm command line: subcommands, shared engine options, and the error policy — every
// failure is one line on stderr ("vlm: error: <file>: <problem>") and a documented exit code.

import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMModels
import VLMTokenizer
import VLMImage

/// Exit codes, listed in `vlm --help` and the README.
enum ExitCode32: Int32 {
    case ok = 0
    case failure = 1
    case usage = 64
}

let exitCodesHelp = """
EXIT CODES:
  0   success
  1   error: bad input, model or output (one line on stderr names the file and the problem)
  2   finished, but some items were skipped (listed on stderr and in <output>.errors.jsonl)
  64  usage error: unknown option, missing or invalid argument

Data goes to stdout only; errors, warnings and progress to stderr only. "-" means stdin or
stdout wherever a file is expected. Shell completions: vlm --generate-completion-script bash|zsh|fish
"""

@main
struct VLM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vlm",
        abstract: "Images and texts to feature vectors on the CPU (ResNet + BERT over OpenBLAS).",
        discussion: exitCodesHelp,
        version: "0.1.0",
        subcommands: [EmbedImage.self, EmbedText.self, Fuse.self, Classify.self, PreprocessCommand.self, Tokenize.self, Similarity.self, Inspect.self, Bench.self, ModelsCommand.self]
    )

    static func main() {
        reexecWithBetterBLASKernels()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as CLIError {
            fail(error.description)
        } catch let error as SafetensorsError {
            fail(error.description)
        } catch let error as NPYError {
            fail(error.description)
        } catch let error as IOError {
            fail(error.description)
        } catch let error as WeightError {
            fail(error.description)
        } catch let error as TokenizerError {
            fail(error.description)
        } catch let error as ImageError {
            fail(error.description)
        } catch {
            exit(withError: error)
        }
    }

    static func fail(_ message: String) -> Never {
        let line = "vlm: error: " + message.replacingOccurrences(of: "\n", with: " ") + "\n"
        FileHandle.standardError.write(Data(line.utf8))
        Foundation.exit(ExitCode32.failure.rawValue)
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
    execv("/proc/self/exe", argv)
    // execv returned: it failed; run on with the kernels we have.
    unsetenv("OPENBLAS_CORETYPE")
}

/// A user-facing failure that is not a file-format error.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

func note(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

// MARK: - Shared options

struct EngineOptions: ParsableArguments {
    @Option(help: "Compute backend: blas (OpenBLAS) or naive (plain loops). Default: $VLM_BACKEND, else blas.")
    var backend: BackendKind?

    @Option(help: "Threads for OpenBLAS and the engine's own loops. Default: all cores ($VLM_THREADS).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    /// Applies the thread count and returns the backend.
    func configure() -> any Backend {
        Threads.set(threads ?? ProcessInfo.processInfo.environment["VLM_THREADS"].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil } ?? Threads.defaultCount())
        let env = ProcessInfo.processInfo.environment
        let kind = backend ?? env["VLM_BACKEND"].flatMap { BackendKind(rawValue: $0.lowercased()) } ?? .blas
        if kind == .blas && env["VLM_WINOGRAD"] == "0" { return BLASBackend(winograd: false) }
        return kind.make()
    }
}

extension BackendKind: ExpressibleByArgument {}
extension OutputFormat: ExpressibleByArgument {}

// MARK: - Model loading

/// A model argument is a folder holding model.safetensors, or a .safetensors file.
func resolveWeights(_ path: String) throws -> String {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw IOError.cannotOpen(path: path, reason: "no such file or folder")
    }
    if isDir.boolValue {
        let file = (path as NSString).appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: file) else {
            throw CLIError("\(path): no model.safetensors in this folder")
        }
        return file
    }
    return path
}

/// Loads a ResNet from a folder or .safetensors file, or builds one from seeded synthetic weights
/// when `spec` is "synthetic:resnet50" (any depth; ":SEED" optional) — for demos and benchmarks.
func loadResNet(_ spec: String, backend: any Backend) throws -> ResNet {
    if spec.hasPrefix("synthetic:") {
        let parts = spec.split(separator: ":").map(String.init)
        guard parts.count >= 2, parts[1].hasPrefix("resnet"), let depth = Int(parts[1].dropFirst(6)),
              let seed = parts.count > 2 ? UInt64(parts[2]) : 0,
              let source = Synthetic.resnet(depth: depth, seed: seed) else {
            throw CLIError("\(spec): unknown synthetic model; use synthetic:resnet18|34|50|101|152[:SEED]")
        }
        note("vlm: note: \(spec) has seeded random weights (synthetic): its features mean nothing")
        return try ResNet(source: source, backend: backend)
    }
    let file: String
    do {
        file = try resolveWeights(spec)
    } catch IOError.cannotOpen(let path, _) where path == defaultResNetModel {
        throw CLIError("\(path): no such folder; pass --model DIR|FILE.safetensors (torchvision or timm ResNet weights), or --model synthetic:resnet50")
    }
    return try ResNet(source: try SafetensorsFile(path: file), backend: backend)
}

let defaultResNetModel = "models/resnet50"

func isTerminal(_ fd: Int32) -> Bool { isatty(fd) != 0 }
