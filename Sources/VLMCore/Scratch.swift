// A per-thread scratch buffer that grows and is kept, so a layer's temporary storage (im2col
// tiles) is allocated once per thread, not zeroed and faulted in on every call.

import Foundation

public enum Scratch {
    final class Buffer {
        var pointer: UnsafeMutablePointer<Float>?
        var capacity = 0
        var inUse = false
        deinit { pointer?.deallocate() }
    }

    private static let key = "vlm.scratch"

    /// Calls body with at least `count` floats of uninitialised storage owned by this thread.
    /// Nested calls on the same thread get a temporary buffer of their own.
    public static func withFloats<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        precondition(count >= 0)
        let dict = Thread.current.threadDictionary
        let buffer: Buffer
        if let b = dict[key] as? Buffer { buffer = b } else { buffer = Buffer(); dict[key] = buffer }
        if buffer.inUse {
            let temp = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count))
            defer { temp.deallocate() }
            return body(temp)
        }
        if buffer.pointer == nil || buffer.capacity < count {
            buffer.pointer?.deallocate()
            buffer.capacity = max(1, count)
            buffer.pointer = UnsafeMutablePointer<Float>.allocate(capacity: buffer.capacity)
        }
        buffer.inUse = true
        defer { buffer.inUse = false }
        return body(buffer.pointer!)
    }
}
