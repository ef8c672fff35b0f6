// Where texts come from: arguments, a file or stdin with one text per line, or JSON lines with
// the text in a named field (for texts that contain newlines). Invalid UTF-8 is an error naming
// the line, unless --lossy asks for replacement characters.

import ArgumentParser
import Foundation
import VLMCore
import VLMModels

struct TextInputOptions: ParsableArguments {
    @Argument(help: "Texts to embed. Without any, texts are read from --file, or from stdin when it is not a terminal.")
    var texts: [String] = []

    @Option(help: "A file with one text per line; - for stdin.")
    var file: String?

    @Option(help: "Read JSON lines and take the text from this field (texts may then contain newlines).")
    var jsonlField: String?

    @Option(help: "With --jsonl-field: take a second segment (sentence pair) from this field.")
    var jsonlPairField: String?

    @Flag(help: "Decode invalid UTF-8 with replacement characters instead of failing.")
    var lossy = false

    func validate() throws {
        if !texts.isEmpty && file != nil { throw ValidationError("give texts as arguments or with --file, not both") }
        if jsonlPairField != nil && jsonlField == nil { throw ValidationError("--jsonl-pair-field needs --jsonl-field") }
    }

    /// The texts and, when a pair field is given, their second segments.
    func read() throws -> (texts: [String], pairs: [String?]?) {
        if !texts.isEmpty {
            return (texts, nil)
        }
        let name: String
        let data: Data
        if let file, file != "-" {
            name = file
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDir) else {
                throw CLIError("\(file): cannot open: no such file")
            }
            guard !isDir.boolValue, let d = FileManager.default.contents(atPath: file) else {
                throw CLIError("\(file): cannot read (a folder, or no permission)")
            }
            data = d
        } else {
            if file == nil && isTerminal(0) {
                throw CLIError("no input: give texts as arguments, --file FILE, or pipe lines to stdin")
            }
            name = "<stdin>"
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        let lines = try splitLines(data, name: name, lossy: lossy)
        guard let field = jsonlField else { return (lines, nil) }
        var out: [String] = [], pairs: [String?] = []
        for (i, line) in lines.enumerated() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw CLIError("\(name):\(i + 1): not a JSON object")
            }
            guard let text = obj[field] as? String else {
                throw CLIError("\(name):\(i + 1): no string field '\(field)'")
            }
            out.append(text)
            if let pf = jsonlPairField {
                guard obj[pf] == nil || obj[pf] is NSNull || obj[pf] is String else {
                    throw CLIError("\(name):\(i + 1): field '\(pf)' is not a string")
                }
                pairs.append(obj[pf] as? String)
            }
        }
        return (out, jsonlPairField == nil ? nil : pairs)
    }
}

/// Lines of `data` ("\n" or "\r\n"; a final newline ends the last line, it does not start one).
func splitLines(_ data: Data, name: String, lossy: Bool) throws -> [String] {
    var lines: [String] = []
    var lineNo = 0
    var start = data.startIndex
    func emit(_ end: Data.Index) throws {
        lineNo += 1
        var slice = data[start..<end]
        if slice.last == 0x0D { slice = slice.dropLast() }
        if let s = String(data: slice, encoding: .utf8) {
            lines.append(s)
        } else if lossy {
            lines.append(String(decoding: slice, as: UTF8.self))
        } else {
            throw CLIError("\(name):\(lineNo): not valid UTF-8 (use --lossy to replace bad bytes)")
        }
    }
    var i = data.startIndex
    while i < data.endIndex {
        if data[i] == 0x0A {
            try emit(i)
            start = data.index(after: i)
        }
        i = data.index(after: i)
    }
    if start < data.endIndex { try emit(data.endIndex) }
    return lines
}

/// The default text model: models/all-MiniLM-L6-v2 under the working folder, else beside the
/// binary's checkout (.build/<config>/vlm → models/), else $VLM_MODELS.
func defaultTextModel() -> String {
    resolveModelsFolder("all-MiniLM-L6-v2")
}

func resolveModelsFolder(_ name: String) -> String {
    let local = "models/" + name
    if FileManager.default.fileExists(atPath: local) { return local }
    if let env = ProcessInfo.processInfo.environment["VLM_MODELS"] {
        return (env as NSString).appendingPathComponent(name)
    }
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("models").appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
        dir = dir.deletingLastPathComponent()
    }
    return local
}

func loadTextEncoder(_ folder: String?, backend: any Backend) throws -> TextEncoder {
    let path = folder ?? defaultTextModel()
    if folder == nil && !FileManager.default.fileExists(atPath: path) {
        throw CLIError("\(path): the default text model is not there; run `make models`, or pass --model DIR")
    }
    let enc = try TextEncoder(folder: path, backend: backend)
    if !enc.model.ignoredHeads.isEmpty {
        note("vlm: note: \(path): ignoring \(enc.model.ignoredHeads.count) task-head tensors (\(enc.model.ignoredHeads.prefix(3).joined(separator: ", "))\(enc.model.ignoredHeads.count > 3 ? ", …" : "")); using the encoder only")
    }
    return enc
}
