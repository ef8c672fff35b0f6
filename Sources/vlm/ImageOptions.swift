// Options shared by every command that reads image files: preprocessing and the pixel limit.

import ArgumentParser
import Foundation
import VLMImage

struct ImageOptions: ParsableArguments {
    @Option(help: "Resize the shorter side to this (torchvision's V1 weights: 256, V2: 232).")
    var resize: Int = 256

    @Option(help: "Center-crop to this square size.")
    var crop: Int = 224

    @Option(help: "Per-channel mean, R,G,B.", transform: parseTriple)
    var mean: [Float] = Preprocessing.imagenetMean

    @Option(help: "Per-channel standard deviation, R,G,B.", transform: parseTriple)
    var std: [Float] = Preprocessing.imagenetStd

    @Option(help: "Refuse images with more pixels than this (decompression bombs).")
    var maxPixels: UInt64 = ImageDecoder.defaultMaxPixels

    func validate() throws {
        if resize < 1 || crop < 1 { throw ValidationError("--resize and --crop must be positive") }
        if std.contains(where: { $0 == 0 }) { throw ValidationError("--std must not contain 0") }
        if maxPixels < 1 { throw ValidationError("--max-pixels must be positive") }
    }

    var preprocessing: Preprocessing { Preprocessing(resize: resize, crop: crop, mean: mean, std: std) }
}

func parseTriple(_ s: String) throws -> [Float] {
    let parts = s.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    guard parts.count == 3, parts.allSatisfy({ $0 != nil && $0!.isFinite }) else {
        throw ValidationError("expected three numbers R,G,B, got '\(s)'")
    }
    return parts.map { $0! }
}

/// Image file extensions taken from folders (explicit paths are taken whatever their name).
let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "png"]

/// Expands paths: files as given; folders recursively, image files only, in sorted order.
func expandImagePaths(_ paths: [String]) throws -> [String] {
    var out: [String] = []
    let fm = FileManager.default
    for p in paths {
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: p, isDirectory: &isDir), isDir.boolValue {
            guard let walker = fm.enumerator(atPath: p) else { throw CLIError("\(p): cannot list this folder") }
            var found: [String] = []
            while let rel = walker.nextObject() as? String {
                if imageExtensions.contains((rel as NSString).pathExtension.lowercased()) {
                    found.append((p as NSString).appendingPathComponent(rel))
                }
            }
            // Sorted by bytes, so the order does not depend on the locale or the file system.
            out += found.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        } else {
            out.append(p)   // missing or unreadable files become per-item errors later
        }
    }
    return out
}
