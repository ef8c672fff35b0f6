// A restricted unpickler for what torch.save writes: a pickle is a program, and this one is
// never run. Data opcodes of protocols 0–5 build plain values (None, bools, ints, floats,
// strings, bytes, tuples, lists, dicts); the only callables are an allow-list of globals — an
// OrderedDict, torch's tensor and parameter rebuild functions, the typed storage classes (as the
// dtype of a persistent id) — each interpreted here, not looked up and called. Any other global
// (os.system, builtins.eval, an unknown class), REDUCE or BUILD on anything else, INST / OBJ /
// NEWOBJ_EX / EXT* and out-of-band buffers are refused with an error naming them.
// A TorchScript archive's data.pkl (read with `torchScript: true`) also names its modules'
// classes, `__torch__.*`: each becomes an inert `PickleObject` whose state is a plain dictionary
// (NEWOBJ with no arguments, then BUILD with a dict) — no method of it exists here, let alone
// runs — and torch.jit._pickle's list builders (build_intlist, …, restore_type_tag), which wrap a
// list or value and are read as that value. No other global is added for archives. What the
// TorchScript pickler writes: torch/csrc/jit/serialization/pickler.cpp (`pushIValueImpl`).
// Opcode semantics: CPython's Lib/pickle.py (`_Unpickler`) and pickletools.py; what torch emits:
// torch/serialization.py (`_save`, `_legacy_save`) and torch/_utils.py (`_rebuild_tensor_v2`).

import VLMCore

/// A storage a persistent id names: ("storage", torch.<Type>Storage, key, location, numel[, view]).
public struct TorchStorageRef: Equatable, Sendable {
    public let key: String
    public let dtype: DType
    public let numel: Int
    /// Legacy files only: the tensor's storage is a view of `key` from this element for `viewSize`.
    public let viewOffset: Int
    public let viewSize: Int?
}

/// A tensor as `_rebuild_tensor_v2` describes it: a window (offset, sizes, strides, in elements)
/// on a storage.
public struct TorchTensorRef: Equatable, Sendable {
    public let storage: TorchStorageRef
    public let offset: Int
    public let shape: [Int]
    public let strides: [Int]
}

/// The globals a torch state dict may name; anything else is refused when the GLOBAL is read.
public enum PickleGlobal: Equatable, Sendable {
    case orderedDict, rebuildTensorV2, rebuildTensor, rebuildParameter, rebuildParameterWithState, rebuildFromTypeV2
    case tensorClass, parameterClass, storage(DType), codecsEncode, set, frozenset
    /// TorchScript archives only: a module's class (`__torch__.…`), and a list builder.
    case scriptClass, scriptListBuilder, scriptTypeTag

    /// torch.jit._pickle's builders: each takes one list and gives it back typed.
    static let scriptBuilders: Set<String> = ["torch.jit._pickle.build_intlist", "torch.jit._pickle.build_doublelist",
                                              "torch.jit._pickle.build_boollist", "torch.jit._pickle.build_tensorlist"]

    static let allowed: [String: PickleGlobal] = [
        "collections.OrderedDict": .orderedDict,
        "torch._utils._rebuild_tensor_v2": .rebuildTensorV2,
        "torch._utils._rebuild_tensor": .rebuildTensor,
        "torch._utils._rebuild_parameter": .rebuildParameter,
        "torch._utils._rebuild_parameter_with_state": .rebuildParameterWithState,
        "torch._tensor._rebuild_from_type_v2": .rebuildFromTypeV2,
        "torch.Tensor": .tensorClass,
        "torch.nn.parameter.Parameter": .parameterClass,
        "torch.FloatStorage": .storage(.F32), "torch.HalfStorage": .storage(.F16),
        "torch.BFloat16Storage": .storage(.BF16), "torch.DoubleStorage": .storage(.F64),
        "torch.LongStorage": .storage(.I64), "torch.IntStorage": .storage(.I32),
        "torch.ShortStorage": .storage(.I16), "torch.CharStorage": .storage(.I8),
        "torch.ByteStorage": .storage(.U8), "torch.BoolStorage": .storage(.BOOL),
        // bytes under protocol 2 are pickled as _codecs.encode(text, "latin1"); sets as set(list).
        "_codecs.encode": .codecsEncode,
        "builtins.set": .set, "__builtin__.set": .set, "builtins.frozenset": .frozenset, "__builtin__.frozenset": .frozenset,
    ]
}

/// Mutable containers are classes, as in Python: APPEND and SETITEM reach every reference.
/// `depth` bounds nesting, so freeing a value can never run deep enough to exhaust the stack.
public final class PickleList {
    public internal(set) var items: [PickleValue] = []
    var depth = 1
}

public final class PickleDict {
    public internal(set) var entries: [(key: PickleValue, value: PickleValue)] = []
    var stringIndex: [String: Int] = [:]
    var intIndex: [Int64: Int] = [:]
    var depth = 1

    public subscript(_ key: String) -> PickleValue? { stringIndex[key].map { entries[$0].value } }
}

/// An object of a TorchScript archive: its class's name and its attributes, never its code.
public final class PickleObject {
    public let className: String
    public internal(set) var state: PickleDict?
    init(_ className: String) { self.className = className }
}

public final class PickleTuple {
    public let items: [PickleValue]
    let depth: Int
    init(_ items: [PickleValue]) {
        self.items = items
        depth = 1 + (items.map(\.depth).max() ?? 0)
    }
}

public enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    /// An integer wider than 64 bits: its little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal, String)
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)
    /// TorchScript archives only: an inert module object.
    case object(PickleObject)

    var depth: Int {
        switch self {
        case .tuple(let t): return t.depth
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        case .object(let o): return 1 + (o.state?.depth ?? 0)
        default: return 0
        }
    }

    /// What the value is, for messages.
    public var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int, .bigInt: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict: return "a dict"
        case .global(_, let name): return "'\(name)'"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        case .object(let o): return "a TorchScript object '\(o.className.prefix(120))'"
        }
    }

    public var intValue: Int? { if case .int(let i) = self, let v = Int(exactly: i) { return v }; return nil }
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var tupleItems: [PickleValue]? { if case .tuple(let t) = self { return t.items }; return nil }
}

public struct PickleError: VLMError, Equatable {
    public let description: String
    public init(_ path: String, _ message: String) { description = "\(path): \(message)" }
}

/// Reads one pickle from `bytes` starting at `start`; `end` is just past its STOP.
public struct Unpickler {
    public static let maxDepth = 200

    let b: UnsafeRawBufferPointer
    let path: String
    var pos: Int
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    /// Every mutable container made, emptied by `release()` so a self-referencing list (legal in
    /// a pickle) cannot leak.
    var containers: [AnyObject] = []
    /// Work the allow-listed calls may still do (copying a set's items, encoding bytes): a few
    /// times the stream's size, so re-applying a call through the memo cannot take quadratic time.
    var budget: Int

    public private(set) var end = 0
    /// A TorchScript archive's pickle: `__torch__.*` classes and torch.jit._pickle's builders allowed.
    let torchScript: Bool

    public init(bytes: UnsafeRawBufferPointer, path: String, start: Int = 0, torchScript: Bool = false) {
        b = bytes
        self.path = path
        self.torchScript = torchScript
        pos = start
        budget = 16 * (bytes.count - start) + (1 << 20)
    }

    /// Breaks any reference cycle among the containers this pickle built. Values taken out
    /// before (strings, tensors) stay valid; containers are emptied.
    public mutating func release() {
        for c in containers {
            if let l = c as? PickleList { l.items = [] } else if let d = c as? PickleDict { d.entries = []; d.stringIndex = [:]; d.intIndex = [:] } else if let o = c as? PickleObject { o.state = nil }
        }
        containers = []
        stack = []
        memo = [:]
    }

    func fail(_ at: Int, _ message: String) -> PickleError {
        PickleError(path, "pickle byte \(at): \(message)")
    }

    /// The refusal every dangerous construct gets: what it was, and that nothing ran.
    /// A decimal integer as little-endian two's complement bytes, as few as hold it (LONG1's form).
    static func twosComplement(decimal text: String) -> [UInt8]? {
        var digits = Substring(text)
        let negative = digits.hasPrefix("-")
        if negative || digits.hasPrefix("+") { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        // The magnitude, little-endian bytes, by multiply-and-add per digit.
        var mag: [UInt8] = [0]
        for d in digits.utf8 {
            var carry = UInt32(d - 0x30)
            for k in mag.indices {
                let v = UInt32(mag[k]) * 10 + carry
                mag[k] = UInt8(truncatingIfNeeded: v)
                carry = v >> 8
            }
            while carry > 0 { mag.append(UInt8(truncatingIfNeeded: carry)); carry >>= 8 }
        }
        var bytes = mag
        if negative {
            // Two's complement: invert and add one.
            var carry: UInt16 = 1
            for k in bytes.indices {
                let v = UInt16(~bytes[k]) + carry
                bytes[k] = UInt8(truncatingIfNeeded: v)
                carry = v >> 8
            }
            if bytes.last! & 0x80 == 0 { bytes.append(0xFF) }
            while bytes.count > 1 && bytes[bytes.count - 1] == 0xFF && bytes[bytes.count - 2] & 0x80 != 0 { bytes.removeLast() }
        } else {
            while bytes.count > 1 && bytes.last == 0 { bytes.removeLast() }
            if bytes.last! & 0x80 != 0 { bytes.append(0) }
        }
        return bytes
    }

    func refuse(_ at: Int, _ what: String) -> PickleError {
        PickleError(path, "refusing \(what) at pickle byte \(at): only the globals torch.save writes for tensors and state dicts are allowed, and nothing was executed (is the file from a source you trust?)")
    }

    // MARK: - Reading

    mutating func read(_ n: Int, at op: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= b.count - pos else { throw fail(op, "the stream ends inside an opcode's argument (truncated file)") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: b[pos..<(pos + n)])
    }

    mutating func uint(_ n: Int, at op: Int) throws -> UInt64 {
        let r = try read(n, at: op)
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(r[i]) }
        return v
    }

    mutating func length(_ n: Int, at op: Int) throws -> Int {
        let v = try uint(n, at: op)
        guard v <= UInt64(b.count - pos) else { throw fail(op, "a length of \(v) bytes runs past the end of the stream (truncated file)") }
        return Int(v)
    }

    mutating func line(at op: Int) throws -> String {
        guard let nl = b[pos...].firstIndex(of: 0x0A) else { throw fail(op, "a text argument without its newline (truncated file)") }
        let r = UnsafeRawBufferPointer(rebasing: b[pos..<nl])
        pos = nl + 1
        guard let s = String(validating: r, as: UTF8.self) else { throw fail(op, "a text argument that is not UTF-8") }
        return s.hasSuffix("\r") ? String(s.dropLast()) : s
    }

    mutating func utf8(_ n: Int, at op: Int) throws -> String {
        let r = try read(n, at: op)
        guard let s = String(validating: r, as: UTF8.self) else { throw fail(op, "a string that is not UTF-8") }
        return s
    }

    // MARK: - Stack

    mutating func pop(at op: Int) throws -> PickleValue {
        guard let v = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw fail(op, "the stack is empty (a malformed pickle)") }
        return v
    }

    mutating func popMark(at op: Int) throws -> [PickleValue] {
        guard let m = marks.popLast(), m <= stack.count else { throw fail(op, "no MARK to pop to (a malformed pickle)") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func push(_ v: PickleValue, at op: Int) throws {
        guard v.depth <= Unpickler.maxDepth else { throw fail(op, "values nested deeper than \(Unpickler.maxDepth) levels") }
        stack.append(v)
    }

    mutating func tuple(_ items: [PickleValue], at op: Int) throws -> PickleValue {
        let t = PickleTuple(items)
        guard t.depth <= Unpickler.maxDepth else { throw fail(op, "values nested deeper than \(Unpickler.maxDepth) levels") }
        return .tuple(t)
    }

    mutating func newList(_ items: [PickleValue] = []) -> PickleList {
        let l = PickleList()
        containers.append(l)
        l.items = items
        l.depth = 1 + (items.map(\.depth).max() ?? 0)
        return l
    }

    mutating func newDict() -> PickleDict {
        let d = PickleDict()
        containers.append(d)
        return d
    }

    func append(_ v: PickleValue, to l: PickleList, at op: Int) throws {
        l.depth = max(l.depth, v.depth + 1)
        guard l.depth <= Unpickler.maxDepth else { throw fail(op, "values nested deeper than \(Unpickler.maxDepth) levels") }
        l.items.append(v)
    }

    func set(_ k: PickleValue, _ v: PickleValue, in d: PickleDict, at op: Int) throws {
        d.depth = max(d.depth, v.depth + 1, k.depth + 1)
        guard d.depth <= Unpickler.maxDepth else { throw fail(op, "values nested deeper than \(Unpickler.maxDepth) levels") }
        switch k {
        case .string(let s):
            if let i = d.stringIndex[s] { d.entries[i].value = v; return }
            d.stringIndex[s] = d.entries.count
        case .int(let i):
            if let j = d.intIndex[i] { d.entries[j].value = v; return }
            d.intIndex[i] = d.entries.count
        case .list, .dict:
            throw fail(op, "\(k.kind) used as a dict key (unhashable)")
        default:
            break
        }
        d.entries.append((k, v))
    }

    // MARK: - The loop

    /// The pickled value. Throws on malformed streams and on anything outside the allow-list.
    public mutating func load() throws -> PickleValue {
        while true {
            let op = pos
            guard pos < b.count else { throw fail(op, "the stream ends before STOP (truncated file)") }
            let code = b[pos]
            pos += 1
            switch code {
            case 0x80: // PROTO
                let v = try uint(1, at: op)
                guard v <= 5 else { throw fail(op, "pickle protocol \(v) is not one this reader knows (0–5)") }
            case 0x95: // FRAME: a length prefix only; the opcodes follow inline.
                _ = try uint(8, at: op)
            case 0x2E: // STOP
                end = pos
                guard let v = stack.last else { throw fail(op, "STOP with an empty stack") }
                return v
            case 0x28: // MARK
                marks.append(stack.count)
            case 0x30: // POP
                if marks.last == stack.count { marks.removeLast() } else { _ = try pop(at: op) }
            case 0x31: // POP_MARK
                _ = try popMark(at: op)
            case 0x32: // DUP
                guard let v = stack.last else { throw fail(op, "DUP on an empty stack") }
                stack.append(v)

            // Constants and numbers.
            case 0x4E: try push(.none, at: op)
            case 0x88: try push(.bool(true), at: op)
            case 0x89: try push(.bool(false), at: op)
            case 0x4A: try push(.int(Int64(Int32(bitPattern: UInt32(try uint(4, at: op))))), at: op) // BININT
            case 0x4B: try push(.int(Int64(try uint(1, at: op))), at: op)                            // BININT1
            case 0x4D: try push(.int(Int64(try uint(2, at: op))), at: op)                            // BININT2
            case 0x8A, 0x8B: // LONG1, LONG4: little-endian two's complement
                let n = try length(code == 0x8A ? 1 : 4, at: op)
                let r = Array(try read(n, at: op))
                if n == 0 { try push(.int(0), at: op); break }
                if n <= 8 {
                    var v: UInt64 = r.last! & 0x80 != 0 ? ~0 : 0
                    for byte in r.reversed() { v = v << 8 | UInt64(byte) }
                    try push(.int(Int64(bitPattern: v)), at: op)
                } else {
                    try push(.bigInt(r), at: op)
                }
            case 0x49: // INT (text; "00"/"01" are False/True)
                let s = try line(at: op)
                if s == "00" || s == "01" { try push(.bool(s == "01"), at: op); break }
                guard let v = Int64(s) else { throw fail(op, "INT '\(s.prefix(40))' is not a 64-bit integer") }
                try push(.int(v), at: op)
            case 0x4C: // LONG (text, with a trailing L in protocol 0)
                var s = try line(at: op)
                if s.hasSuffix("L") { s.removeLast() }
                if let v = Int64(s) {
                    try push(.int(v), at: op)
                } else {
                    // Beyond 64 bits (the legacy format's magic number, in protocols 0 and 1).
                    guard s.utf8.count <= 400, let bytes = Unpickler.twosComplement(decimal: s) else {
                        throw fail(op, "LONG '\(s.prefix(40))' is not a whole number")
                    }
                    try push(.bigInt(bytes), at: op)
                }
            case 0x47: try push(.float(Double(bitPattern: UInt64(bigEndian: try read(8, at: op).loadUnaligned(as: UInt64.self)))), at: op) // BINFLOAT
            case 0x46: // FLOAT (text)
                let s = try line(at: op)
                guard let v = Double(s) else { throw fail(op, "FLOAT '\(s.prefix(40))' is not a number") }
                try push(.float(v), at: op)

            // Strings and bytes.
            case 0x58: try push(.string(try utf8(try length(4, at: op), at: op)), at: op)   // BINUNICODE
            case 0x8C: try push(.string(try utf8(try length(1, at: op), at: op)), at: op)   // SHORT_BINUNICODE
            case 0x8D: try push(.string(try utf8(try length(8, at: op), at: op)), at: op)   // BINUNICODE8
            case 0x54: try push(.string(try utf8(try length(4, at: op), at: op)), at: op)   // BINSTRING (Python 2 str, read as UTF-8 as torch.load does)
            case 0x55: try push(.string(try utf8(try length(1, at: op), at: op)), at: op)   // SHORT_BINSTRING
            case 0x42, 0x43, 0x8E, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                let n = try length(code == 0x43 ? 1 : code == 0x42 ? 4 : 8, at: op)
                try push(.bytes(Array(try read(n, at: op))), at: op)
            case 0x56: try push(.string(try Unpickler.rawUnicodeEscape(try line(at: op), fail: { fail(op, $0) })), at: op) // UNICODE
            case 0x53: try push(.string(try Unpickler.quoted(try line(at: op), fail: { fail(op, $0) })), at: op)          // STRING

            // Containers.
            case 0x29: try push(try tuple([], at: op), at: op)                       // EMPTY_TUPLE
            case 0x74: try push(try tuple(try popMark(at: op), at: op), at: op)      // TUPLE
            case 0x85, 0x86, 0x87: // TUPLE1-3
                let n = Int(code - 0x84)
                guard stack.count - (marks.last ?? 0) >= n else { throw fail(op, "TUPLE\(n) with too few values on the stack") }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                try push(try tuple(items, at: op), at: op)
            case 0x5D: try push(.list(newList()), at: op)                            // EMPTY_LIST
            case 0x6C: try push(.list(newList(try popMark(at: op))), at: op)         // LIST
            case 0x8F: try push(.list(newList()), at: op)                            // EMPTY_SET (a list here)
            case 0x91: try push(.list(newList(try popMark(at: op))), at: op)         // FROZENSET
            case 0x7D: try push(.dict(newDict()), at: op)                            // EMPTY_DICT
            case 0x64: // DICT
                let items = try popMark(at: op)
                guard items.count % 2 == 0 else { throw fail(op, "DICT with an odd number of items") }
                let d = newDict()
                for i in stride(from: 0, to: items.count, by: 2) { try set(items[i], items[i + 1], in: d, at: op) }
                try push(.dict(d), at: op)
            case 0x61: // APPEND
                let v = try pop(at: op)
                guard case .list(let l)? = stack.last else { throw fail(op, "APPEND to \(stack.last?.kind ?? "nothing"), not a list") }
                try append(v, to: l, at: op)
            case 0x65, 0x90: // APPENDS, ADDITEMS
                let items = try popMark(at: op)
                guard case .list(let l)? = stack.last else { throw fail(op, "APPENDS to \(stack.last?.kind ?? "nothing"), not a list") }
                for v in items { try append(v, to: l, at: op) }
            case 0x73: // SETITEM
                let v = try pop(at: op), k = try pop(at: op)
                guard case .dict(let d)? = stack.last else { throw fail(op, "SETITEM on \(stack.last?.kind ?? "nothing"), not a dict") }
                try set(k, v, in: d, at: op)
            case 0x75: // SETITEMS
                let items = try popMark(at: op)
                guard items.count % 2 == 0 else { throw fail(op, "SETITEMS with an odd number of items") }
                guard case .dict(let d)? = stack.last else { throw fail(op, "SETITEMS on \(stack.last?.kind ?? "nothing"), not a dict") }
                for i in stride(from: 0, to: items.count, by: 2) { try set(items[i], items[i + 1], in: d, at: op) }

            // The memo. Indices are dictionary keys, never array positions: a huge index costs nothing.
            case 0x71: memo[Int(try uint(1, at: op))] = try top(at: op)               // BINPUT
            case 0x72: memo[Int(try uint(4, at: op))] = try top(at: op)               // LONG_BINPUT
            case 0x94: memo[memo.count] = try top(at: op)                             // MEMOIZE
            case 0x70: // PUT (text)
                let s = try line(at: op)
                guard let i = Int(s), i >= 0 else { throw fail(op, "PUT index '\(s.prefix(40))' is not a non-negative integer") }
                memo[i] = try top(at: op)
            case 0x68, 0x6A, 0x67: // BINGET, LONG_BINGET, GET
                let i: Int
                if code == 0x67 {
                    let s = try line(at: op)
                    guard let v = Int(s) else { throw fail(op, "GET index '\(s.prefix(40))' is not an integer") }
                    i = v
                } else {
                    i = Int(try uint(code == 0x68 ? 1 : 4, at: op))
                }
                guard let v = memo[i] else { throw fail(op, "memo index \(i) was never stored (a malformed pickle)") }
                stack.append(v)

            // Globals and calls: the allow-list.
            case 0x63: // GLOBAL "module\nname\n"
                let module = try line(at: op), name = try line(at: op)
                try push(try global(module, name, at: op), at: op)
            case 0x93: // STACK_GLOBAL
                let name = try pop(at: op), module = try pop(at: op)
                guard let m = module.stringValue, let n = name.stringValue else { throw fail(op, "STACK_GLOBAL on \(module.kind) and \(name.kind), not two strings") }
                try push(try global(m, n, at: op), at: op)
            case 0x52: // REDUCE
                let args = try pop(at: op), callable = try pop(at: op)
                try push(try reduce(callable, args, at: op), at: op)
            case 0x81: // NEWOBJ: cls.__new__(cls, *args) — an OrderedDict, or (archives) an inert module object
                let args = try pop(at: op), cls = try pop(at: op)
                guard args.tupleItems?.isEmpty == true else { throw refuse(op, "NEWOBJ on \(cls.kind) with arguments") }
                switch cls {
                case .global(.orderedDict, _): try push(.dict(newDict()), at: op)
                case .global(.scriptClass, let name):
                    let o = PickleObject(name)
                    containers.append(o)
                    try push(.object(o), at: op)
                default: throw refuse(op, "NEWOBJ on \(cls.kind)")
                }
            case 0x62: // BUILD: setstate. An OrderedDict's attributes (a state dict's _metadata) or a tensor's, both ignored; an archive's object takes a dict of attributes, once.
                let state = try pop(at: op)
                guard let target = stack.last else { throw fail(op, "BUILD on an empty stack") }
                switch target {
                case .dict, .tensor: _ = state
                case .object(let o):
                    guard o.state == nil else { throw fail(op, "BUILD twice on \(target.kind)") }
                    guard case .dict(let d) = state else {
                        throw refuse(op, "\(target.kind) whose state is \(state.kind), not a dictionary of attributes (a class with its own __setstate__)")
                    }
                    guard d.depth + 1 <= Unpickler.maxDepth else { throw fail(op, "values nested deeper than \(Unpickler.maxDepth) levels") }
                    o.state = d
                default: throw refuse(op, "BUILD on \(target.kind)")
                }
            case 0x51: // BINPERSID
                let pid = try pop(at: op)
                try push(try persistent(pid, at: op), at: op)
            case 0x50: // PERSID: only a protocol-0 pickler writes it, as the text of torch's tuple
                throw PickleError(path, "a pickle of protocol 0 (text), whose tensor references are text persistent ids at pickle byte \(op), which torch.load cannot read either; save the state dict again with torch.save's default protocol")
            case 0x69: throw refuse(op, "INST (creates an instance of any class)")
            case 0x6F: throw refuse(op, "OBJ (creates an instance of any class)")
            case 0x92: throw refuse(op, "NEWOBJ_EX (creates an instance of any class)")
            case 0x82, 0x83, 0x84: throw refuse(op, "an EXT opcode (the copyreg extension registry)")
            case 0x97, 0x98: throw refuse(op, "an out-of-band buffer opcode")
            default:
                throw fail(op, String(format: "unknown opcode 0x%02x (not a pickle, or a damaged one)", code))
            }
        }
    }

    func top(at op: Int) throws -> PickleValue {
        guard let v = stack.last else { throw fail(op, "PUT with an empty stack") }
        return v
    }

    func global(_ module: String, _ name: String, at op: Int) throws -> PickleValue {
        let full = "\(module).\(name)"
        if torchScript {
            if module == "__torch__" || module.hasPrefix("__torch__.") { return .global(.scriptClass, full) }
            if PickleGlobal.scriptBuilders.contains(full) { return .global(.scriptListBuilder, full) }
            if full == "torch.jit._pickle.restore_type_tag" { return .global(.scriptTypeTag, full) }
        }
        guard let g = PickleGlobal.allowed[full] else {
            if Unpickler.isModelClass(module: module) { throw PickleError(path, Unpickler.wholeModelMessage(path: path, className: full)) }
            throw refuse(op, "global '\(full.prefix(200))'")
        }
        return .global(g, full)
    }

    /// A class of a model library (or torch.nn's): the file is torch.save(model), not a state dict.
    static func isModelClass(module: String) -> Bool {
        let libraries = ["torchvision.models", "timm.models", "transformers.models", "sentence_transformers", "torch.nn.modules"]
        return libraries.contains { module == $0 || module.hasPrefix($0 + ".") }
    }

    /// What to do with a whole pickled model: the one PyTorch command that extracts its state
    /// dict, for this file, quoted for a POSIX shell.
    static func wholeModelMessage(path: String, className: String) -> String {
        // The name without its extension (a dot in the last component, not leading it).
        var base = Substring(path)
        let name = base.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
        if let dot = name.lastIndex(of: "."), dot != name.startIndex { base = path[..<dot] }
        let out = String(base) + ".state_dict.pth"
        func py(_ s: String) -> String { "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'" }
        let code = "import torch; torch.save(torch.load(\(py(path)), weights_only=False).state_dict(), \(py(out)))"
        var quoted = ""
        for c in code {
            if "\\\"$`".contains(c) { quoted.append("\\") }
            quoted.append(c)
        }
        return "a whole pickled model (\(className.prefix(120)), saved by torch.save(model)), not a state dict; nothing was run. "
            + "For a file you trust, extract its weights in PyTorch: python -c \"\(quoted)\""
    }

    /// ("storage", torch.<T>Storage, key, location, numel) — with a 6th item, legacy's view
    /// metadata: None or (view key, offset, size).
    func persistent(_ pid: PickleValue, at op: Int) throws -> PickleValue {
        guard let t = pid.tupleItems, t.count == 5 || t.count == 6, t[0].stringValue == "storage" else {
            throw fail(op, "a persistent id that is not a torch storage: \(pid.kind)")
        }
        guard case .global(.storage(let dtype), _) = t[1] else { throw fail(op, "a storage whose type is \(t[1].kind), not a torch storage class") }
        guard let key = t[2].stringValue, let numel = t[4].intValue, numel >= 0 else {
            throw fail(op, "a storage id without a string key and a non-negative size")
        }
        var viewOffset = 0, viewSize: Int?
        if t.count == 6, let view = t[5].tupleItems {
            guard view.count == 3, view[0].stringValue != nil, let o = view[1].intValue, let s = view[2].intValue,
                  o >= 0, s >= 0, o <= numel, s <= numel - o else {
                throw fail(op, "storage '\(key)': a view outside its storage")
            }
            (viewOffset, viewSize) = (o, s)
        } else if t.count == 6, case .none = t[5] {} else if t.count == 6 {
            throw fail(op, "storage '\(key)': view metadata that is \(t[5].kind)")
        }
        return .storage(TorchStorageRef(key: key, dtype: dtype, numel: numel, viewOffset: viewOffset, viewSize: viewSize))
    }

    mutating func reduce(_ callable: PickleValue, _ args: PickleValue, at op: Int) throws -> PickleValue {
        guard case .global(let g, let name) = callable else { throw refuse(op, "REDUCE on \(callable.kind)") }
        guard let a = args.tupleItems else { throw fail(op, "REDUCE on \(name) with \(args.kind) for arguments, not a tuple") }
        switch g {
        case .orderedDict:
            guard a.isEmpty else { throw fail(op, "OrderedDict called with arguments; torch.save calls it with none") }
            return .dict(newDict())
        case .rebuildTensorV2, .rebuildTensor:
            return try rebuildTensor(a, name: name, at: op)
        case .rebuildParameter, .rebuildParameterWithState:
            guard a.count == (g == .rebuildParameter ? 3 : 4), case .tensor = a[0] else { throw fail(op, "\(name) without a tensor as its first argument") }
            return a[0]
        case .rebuildFromTypeV2:
            // (function, type, args, state): a tensor (or Parameter) with attributes.
            guard a.count == 4, case .global(let f, let fname) = a[0], case .global(let type, let tname) = a[1] else {
                throw fail(op, "\(name) without a function and a type")
            }
            guard type == .tensorClass || type == .parameterClass else { throw refuse(op, "\(name) of type '\(tname)'") }
            guard f == .rebuildTensorV2 || f == .rebuildTensor else { throw refuse(op, "\(name) calling '\(fname)'") }
            return try reduce(a[0], a[2], at: op)
        case .codecsEncode:
            if let t = a.first?.stringValue { try spend(t.utf8.count, at: op) }
            guard a.count == 2, let text = a[0].stringValue, let enc = a[1].stringValue, ["latin1", "latin-1"].contains(enc.lowercased()) else {
                throw fail(op, "_codecs.encode other than of a string to latin1")
            }
            var out: [UInt8] = []
            for u in text.unicodeScalars {
                guard u.value < 256 else { throw fail(op, "_codecs.encode of a character outside latin1") }
                out.append(UInt8(u.value))
            }
            return .bytes(out)
        case .set, .frozenset:
            if a.isEmpty { return .list(newList()) }
            guard a.count == 1, case .list(let l) = a[0] else { throw fail(op, "\(name) of \(a.first?.kind ?? "nothing"), not a list") }
            try spend(l.items.count, at: op)
            let copy = newList()
            copy.items = l.items
            copy.depth = l.depth
            return .list(copy)
        case .scriptListBuilder:
            guard a.count == 1, case .list = a[0] else { throw fail(op, "\(name) of \(a.first?.kind ?? "nothing"), not one list") }
            return a[0]
        case .scriptTypeTag:
            guard a.count == 2, a[1].stringValue != nil else { throw fail(op, "\(name) without a value and a type name") }
            return a[0]
        case .tensorClass, .parameterClass, .storage, .scriptClass:
            throw refuse(op, "REDUCE on \(name) (a class torch.save never calls)")
        }
    }

    mutating func spend(_ n: Int, at op: Int) throws {
        budget -= n
        if budget < 0 { throw fail(op, "more work than a stream of this size can ask for (a call repeated through the memo)") }
    }

    /// (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]]).
    func rebuildTensor(_ a: [PickleValue], name: String, at op: Int) throws -> PickleValue {
        guard a.count >= 4, a.count <= 7, case .storage(let s) = a[0] else { throw fail(op, "\(name) without a storage as its first argument") }
        func ints(_ v: PickleValue) -> [Int]? {
            if let n = v.intValue { return [n] }   // a 1-d size pickled as a bare int by very old torch
            guard let t = v.tupleItems else { return nil }
            let out = t.compactMap(\.intValue)
            return out.count == t.count ? out : nil
        }
        guard let offset = a[1].intValue, let shape = ints(a[2]), let strides = ints(a[3]) else {
            throw fail(op, "\(name) with an offset, size or stride that is not integers")
        }
        guard shape.count == strides.count, shape.count <= 64 else { throw fail(op, "a tensor with \(shape.count) sizes and \(strides.count) strides") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw fail(op, "a tensor with a negative offset, size or stride (offset \(offset), size \(shape), stride \(strides))")
        }
        return .tensor(TorchTensorRef(storage: s, offset: offset, shape: shape, strides: strides))
    }

    // MARK: - Protocol-0 text

    /// STRING's argument: a Python 2 repr, 'text' or "text", with backslash escapes.
    static func quoted(_ s: String, fail: (String) -> PickleError) throws -> String {
        let u = Array(s.utf8)
        guard u.count >= 2, let q = u.first, q == 0x27 || q == 0x22, u.last == q else { throw fail("STRING argument is not quoted") }
        var out: [UInt8] = []
        var i = 1
        while i < u.count - 1 {
            let c = u[i]
            if c != 0x5C { out.append(c); i += 1; continue }
            guard i + 1 < u.count - 1 else { throw fail("STRING ends in a lone backslash") }
            let e = u[i + 1]
            i += 2
            switch e {
            case 0x6E: out.append(0x0A)
            case 0x74: out.append(0x09)
            case 0x72: out.append(0x0D)
            case 0x30: out.append(0)
            case 0x78:
                guard i + 2 <= u.count - 1, let v = UInt8(String(decoding: u[i..<(i + 2)], as: UTF8.self), radix: 16) else { throw fail("STRING has a bad \\x escape") }
                out.append(v)
                i += 2
            default: out.append(e)
            }
        }
        guard let r = String(validating: out, as: UTF8.self) else { throw fail("STRING is not UTF-8") }
        return r
    }

    /// UNICODE's argument: raw-unicode-escape (\uXXXX and \UXXXXXXXX; everything else literal).
    static func rawUnicodeEscape(_ s: String, fail: (String) -> PickleError) throws -> String {
        var out = String.UnicodeScalarView()
        let u = Array(s.unicodeScalars)
        var i = 0
        while i < u.count {
            if u[i] == "\\", i + 1 < u.count, u[i + 1] == "u" || u[i + 1] == "U" {
                let n = u[i + 1] == "u" ? 4 : 8
                guard i + 2 + n <= u.count, let v = UInt32(String(String.UnicodeScalarView(u[(i + 2)..<(i + 2 + n)])), radix: 16),
                      let scalar = Unicode.Scalar(v) else { throw fail("UNICODE has a bad \\u escape") }
                out.append(scalar)
                i += 2 + n
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(out)
    }
}
