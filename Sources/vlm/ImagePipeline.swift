// Decoding and preprocessing of the next batch run on other threads while the model works on
// the current one.

import Foundation
import VLMCore
import VLMImage
import VLMModels

/// A value computed on a background queue.
final class Future<T>: @unchecked Sendable {
    private let group = DispatchGroup()
    private var value: T?

    init(_ work: @escaping () -> T) {
        group.enter()
        DispatchQueue.global(qos: .userInitiated).async {
            self.value = work()
            self.group.leave()
        }
    }

    func wait() -> T {
        group.wait()
        return value!
    }
}

/// One batch's preprocessed images: the tensors that worked and the errors of those that did not.
struct PreparedBatch {
    var range: Range<Int>
    var good: [Int] = []            // item indices, in order
    var tensor: [Float] = []        // (good.count, 3, crop, crop)
    var errors: [ItemError] = []
}

func prepareImages(_ paths: [String], _ range: Range<Int>, _ pre: Preprocessing, maxPixels: UInt64) -> PreparedBatch {
    let per = 3 * pre.crop * pre.crop
    var slots = [[Float]?](repeating: nil, count: range.count)
    var errs = [ItemError?](repeating: nil, count: range.count)
    slots.withUnsafeMutableBufferPointer { s in
        errs.withUnsafeMutableBufferPointer { e in
            let sp = s.baseAddress!, ep = e.baseAddress!
            DispatchQueue.concurrentPerform(iterations: range.count) { k in
                let path = paths[range.lowerBound + k]
                do {
                    sp[k] = pre.tensor(try ImageDecoder.decode(path: path, maxPixels: maxPixels))
                } catch let error as ImageError {
                    ep[k] = ItemError(id: path, kind: error.kind, message: error.description)
                } catch {
                    ep[k] = ItemError(id: path, kind: "error", message: "\(path): \(error)")
                }
            }
        }
    }
    var b = PreparedBatch(range: range)
    b.tensor.reserveCapacity(range.count * per)
    for k in 0..<range.count {
        if let t = slots[k] {
            b.good.append(range.lowerBound + k)
            b.tensor += t
        } else if let e = errs[k] {
            b.errors.append(e)
        }
    }
    return b
}

/// Runs `body` on each prepared batch of `batchSize` items from `start`, preparing the next
/// batch while `body` runs.
func forEachImageBatch(_ paths: [String], from start: Int, batchSize: Int, _ pre: Preprocessing, maxPixels: UInt64,
                       _ body: (PreparedBatch) throws -> Void) rethrows {
    var next: Future<PreparedBatch>?
    func schedule(_ s: Int) -> Future<PreparedBatch>? {
        guard s < paths.count else { return nil }
        let r = s..<min(paths.count, s + batchSize)
        return Future { prepareImages(paths, r, pre, maxPixels: maxPixels) }
    }
    next = schedule(start)
    while let current = next {
        let batch = current.wait()
        next = schedule(batch.range.upperBound)
        try body(batch)
    }
}

/// ResNet output rows for a prepared batch, or [] when none of its images worked.
func runResNet(_ net: ResNet, _ batch: PreparedBatch, crop: Int, logits: Bool) -> [[Float]] {
    guard !batch.good.isEmpty else { return [] }
    let input = Tensor(shape: [batch.good.count, 3, crop, crop], data: batch.tensor)
    let out = net.forward(input)
    let t = logits ? out.logits! : out.pooled
    let d = t.shape[1]
    return (0..<batch.good.count).map { Array(t.data[($0 * d)..<(($0 + 1) * d)]) }
}
