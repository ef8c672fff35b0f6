// Path arithmetic on bytes. Foundation's NSString.deletingLastPathComponent traps on a
// one-character relative name ("q", "q/") on Linux (swift-corelibs-foundation, Swift 6.3):
// `vlm … -o q` crashed. Everything here uses this instead.

/// The folder part of `path`, as NSString.deletingLastPathComponent gives it: "" for a bare
/// name, "/" for a name in the root, trailing slashes ignored.
public func parentPath(_ path: String) -> String {
    var b = Array(path.utf8)
    while b.count > 1 && b.last == 0x2F { b.removeLast() }
    guard let slash = b.lastIndex(of: 0x2F) else { return "" }
    var end = slash
    while end > 0 && b[end - 1] == 0x2F { end -= 1 }
    return end == 0 ? "/" : String(decoding: b[..<end], as: UTF8.self)
}
