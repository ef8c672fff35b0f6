// Where models are: the folders searched for a model, the registry and the labels.

import Foundation
import VLMCore
import VLMIO

/// Finds `name` (a model folder, registry.json, imagenet_classes.txt), in this order:
/// $VLM_MODELS/name; beside the binary — ../share/vlm/name for an installed vlm, models/name up
/// the checkout a built binary sits in; the cache fetches fall back to ($XDG_CACHE_HOME/vlm,
/// else ~/.cache/vlm); models/name under the working folder. The first that exists wins; when
/// none does, the first candidate is named in messages.
public func resolveModelsFolder(_ name: String) -> String {
    let candidates = modelsFolders().map { ($0 as NSString).appendingPathComponent(name) }
    return candidates.first { FileStatus.of($0) != nil } ?? candidates[0]
}

/// The folders models are looked for in, in order (see `resolveModelsFolder`).
public func modelsFolders() -> [String] {
    let env = ProcessInfo.processInfo.environment
    if let m = env["VLM_MODELS"], !m.isEmpty { return [m] }
    var out: [String] = []
    let exe = (try? resolveSymlinks("/proc/self/exe")) ?? CommandLine.arguments[0]
    let bin = URL(fileURLWithPath: exe).deletingLastPathComponent()
    out.append(bin.deletingLastPathComponent().appendingPathComponent("share/vlm").path)
    var dir = bin
    for _ in 0..<4 {
        out.append(dir.appendingPathComponent("models").path)
        dir = dir.deletingLastPathComponent()
    }
    out.append(cacheFolder())
    out.append("models")
    return out
}

/// Where fetched models go when the registry's folder is not writable: $XDG_CACHE_HOME/vlm,
/// else ~/.cache/vlm.
public func cacheFolder() -> String {
    let env = ProcessInfo.processInfo.environment
    let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) as NSString).appendingPathComponent(".cache")
    return (base as NSString).appendingPathComponent("vlm")
}

public let defaultResNetName = "resnet50"
public let defaultTextModelName = "all-MiniLM-L6-v2"


/// A line on stderr.
func note(_ message: String) { writeStandardError(message + "\n") }
