// Feature files read in chunks: a 2-D float32 .npy (known by its magic, whatever its name), or
// raw little-endian float32 rows (.f32, what `-o x.f32` writes) of a given width. A file far larger than memory is read a few thousand rows at a time.

import Foundation
import VLMCore

public final class FeatureFile {
    public let path: String
    public let rows: Int
    public let dim: Int
    let dataOffset: UInt64
    private let file: InputFile

    /// `dimIn`: the row width of a .f32 file (a .npy says its own; when both, they must agree).
    public init(path: String, dimIn: Int?) throws {
        self.path = path
        file = try InputFile(path, what: "the features")
        guard let st = file.status, st.kind == .regular else {
            throw InputError("\(path == "-" ? "<stdin>" : path): not a regular file: feature files are sized first and read in chunks, so they must be files (save the stream to a file first)")
        }
        let size = Int(st.size)
        let head = try file.read(upTo: min(size, 1 << 20))
        let isNPY = head.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59])
        if isNPY || path.lowercased().hasSuffix(".npy") {
            let layout = try head.withUnsafeBytes { try NPY.layout($0, path: path, fileSize: size) }
            guard layout.shape.count == 2 else {
                throw InputError("\(path): a feature file is a 2-D array (rows, dim); this one has shape \(layout.shape)")
            }
            (rows, dim, dataOffset) = (layout.shape[0], layout.shape[1], UInt64(layout.dataOffset))
            if let dimIn, dimIn != dim { throw InputError("\(path): rows of \(dim) values, but --dim-in says \(dimIn)") }
        } else {
            guard let dimIn else { throw OptionError("\(path): a raw float32 file needs --dim-in D (its row width); .npy files say their own") }
            guard dimIn > 0, size % (4 * dimIn) == 0 else {
                throw InputError("\(path): \(size) bytes is not a whole number of rows of \(dimIn) float32 values")
            }
            (rows, dim, dataOffset) = (size / (4 * dimIn), dimIn, 0)
        }
        if dim == 0 { throw InputError("\(path): rows of 0 values") }
    }

    /// Rows `range` into out (range.count × dim floats).
    public func read(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) throws {
        try file.read(into: UnsafeMutableRawPointer(out), count: range.count * dim * 4,
                      at: dataOffset + UInt64(range.lowerBound) * UInt64(dim) * 4)
    }
}
