// `vlm models list|fetch`: the registry and downloads (VLMCatalog).

import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMEmbed
import VLMJobs

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the known models, or fetch one into the models folder.",
        subcommands: [List.self, Fetch.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Known models, their source and whether they are on disk.")
        @Option(help: "A registry file instead of registry.json beside the models ($VLM_REGISTRY).")
        var registry: String?
        @Option(help: "Where models live. Default: $VLM_MODELS, else beside the registry.")
        var modelsDir: String?

        func run() throws {
            let (reg, _) = try Registry.load(registry)
            var out = "name\tkind\tsource\tstatus\n"
            for m in reg.models {
                let dir = modelsDir.map { ($0 as NSString).appendingPathComponent(m.name) } ?? resolveModelsFolder(m.name)
                let present = m.files.allSatisfy { FileStatus.of((dir as NSString).appendingPathComponent($0.path)) != nil }
                let pinned = m.files.allSatisfy { $0.sha256 != nil }
                let prefixed = m.files.allSatisfy { $0.sha256 != nil || $0.hashPrefix != nil }
                out += "\(m.name)\t\(m.kind)\t\(m.source)\t\(present ? "present" : "not fetched")"
                out += pinned ? "\n" : prefixed ? " (checked by sha256 prefix, as torch.hub)\n" : " (checksums not all pinned)\n"
            }
            try FileSink.standardOutput.write(out)
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a model's files (from the hub, $VLM_HUB_URL, or their own URL, $VLM_URL_MIRROR), verify each sha256, and place them atomically.")
        @Argument(help: "A name from `vlm models list`.")
        var name: String
        @Option(help: "A registry file instead of registry.json beside the models ($VLM_REGISTRY).")
        var registry: String?
        @Option(help: "Where models live. Default: $VLM_MODELS, else beside the registry.")
        var modelsDir: String?
        @Flag(help: "Accept files whose sha256 the registry does not pin (prints the digest measured).")
        var allowUnpinned = false
        @Option(parsing: .unconditional, help: "Give up on a download that receives nothing for this many seconds.")
        var timeout: Double = 60

        func validate() throws {
            if !(timeout >= 1 && timeout <= 86_400) { throw ValidationError("--timeout must be from 1 to 86400 seconds, got \(timeout)") }
        }
        @Flag(help: "No progress bar.")
        var quiet = false

        func run() throws {
            try ModelFetch(allowUnpinned: allowUnpinned, timeout: timeout, quiet: quiet).run(name: name, registry: registry, modelsDir: modelsDir)
        }
    }
}

