// Models loaded from what a --model value names: a folder, a checkpoint file, a registry name,
// or seeded synthetic weights.

import Foundation
import VLMCore
import VLMIO
import VLMModels
import VLMTokenizer

/// A ResNet from a folder holding model.safetensors, a .safetensors file, or seeded synthetic
/// weights ("synthetic:resnet50[:SEED]", any depth) for demos and benchmarks; nil spec: the
/// default model.
public func loadResNet(_ spec: String?, backend: any Backend, quiet: Bool = false, allowNonFinite: Bool = false) throws -> ResNet {
    let spec = resolveModelSpec(spec, defaultName: defaultResNetName)
    if spec.hasPrefix("synthetic:") {
        let parts = spec.split(separator: ":").map(String.init)
        guard parts.count >= 2, parts.count <= 3, parts[1].hasPrefix("resnet"), let depth = Int(parts[1].dropFirst(6)),
              let seed = parts.count > 2 ? UInt64(parts[2]) : 0,
              let source = Synthetic.resnet(depth: depth, seed: seed) else {
            throw InputError("\(spec): unknown synthetic model; use synthetic:resnet18|34|50|101|152[:SEED]")
        }
        if !quiet { note("vlm: note: \(spec) has seeded random weights (synthetic): its features mean nothing") }
        return try ResNet(source: source, backend: backend, allowNonFinite: allowNonFinite)
    }
    let file = try weightsFile(spec, defaultName: defaultResNetName)
    let weights = try openWeights(file)
    if CLIPLayout.of(weights.keys) != nil {
        throw WeightError.unrecognized(source: file, reason: "a CLIP state dict without its config (what it says decides the activation and heads): pass the folder holding it with open_clip_config.json or config.json, or name its open_clip architecture with --clip-config NAME")
    }
    if !quiet, let stripped = weights as? PrefixStrippedCheckpoint {
        note("vlm: note: \(file): every key carries the prefix '\(stripped.prefix)' (a model saved inside a wrapper); read without it")
    }
    return try explainingSharedPrefix(weights) { try ResNet(source: weights, backend: backend, allowNonFinite: allowNonFinite) }
}

/// A model argument's weights: the file itself, or the folder's weights (`weightsInFolder`).
public func weightsFile(_ path: String, defaultName: String? = nil) throws -> String {
    if path == "-" {
        throw OptionError("a checkpoint is read from a file (it is memory-mapped), not from stdin: save it to a file and name that")
    }
    guard let st = FileStatus.of(path) else {
        let code = errno
        if let defaultName, path == resolveModelsFolder(defaultName) {
            throw InputError("\(path): no such folder; run `vlm models fetch \(defaultName)`, or pass --model DIR|FILE (.safetensors, .pth, .pt or .bin: torchvision or timm ResNet weights), or --model synthetic:resnet50")
        }
        // Another registry model's folder, not fetched yet.
        let name = (path as NSString).lastPathComponent
        if code == ENOENT, path == resolveModelsFolder(name), let (reg, _) = try? Registry.load(nil), reg.models.contains(where: { $0.name == name }) {
            throw InputError("\(path): no such folder; run `vlm models fetch \(name)` to download it (sha256-checked)")
        }
        throw IOError.cannotOpen(path: path, reason: code == ENOENT ? "no such file or folder" : errnoMessage(code))
    }
    if st.kind == .directory {
        do {
            return try weightsInFolder(path)
        } catch WeightError.unrecognized(let source, let reason) where reason.hasPrefix("no model.safetensors") {
            // A registry model's folder before its weights are fetched (models/resnet50 on a fresh clone).
            guard let name = knownModelName(folder: path) ?? defaultName.flatMap({ path == resolveModelsFolder($0) ? $0 : nil }) else { throw WeightError.unrecognized(source: source, reason: reason) }
            let tryWithout = name.hasPrefix("resnet") ? ", or try the command with --model synthetic:\(name) (seeded random weights)" : ""
            throw WeightError.unrecognized(source: source, reason: "no weights yet: run `vlm models fetch \(name)` to download them (sha256-checked)\(tryWithout)")
        }
    }
    return path
}

/// The registry name of a models-folder path (`models/resnet50` → "resnet50"), if it is one.
func knownModelName(folder: String) -> String? {
    let name = (folder as NSString).lastPathComponent
    guard let (reg, _) = try? Registry.load(nil), reg.models.contains(where: { $0.name == name }),
          FileStatus.sameFile(folder, resolveModelsFolder(name)) else { return nil }
    return name
}

public func defaultTextModel() -> String { resolveModelsFolder(defaultTextModelName) }

public func loadTextEncoder(_ folder: String?, backend: any Backend, quiet: Bool = false, allowNonFinite: Bool = false) throws -> TextEncoder {
    let path = resolveModelSpec(folder, defaultName: defaultTextModelName)
    if folder == nil && FileStatus.of(path) == nil {
        throw InputError("\(path): the default text model is not there; run `make models`, or pass --model DIR")
    }
    if FileStatus.of(path)?.kind == .regular, let c = try? Checkpoints.open(path), CLIPLayout.of(c.tensorNames) != nil {
        throw WeightError.unrecognized(source: path, reason: "a CLIP state dict without its config (what it says decides the activation and heads): pass the folder holding it with open_clip_config.json or config.json, or name its open_clip architecture with --clip-config NAME")
    }
    let enc = try TextEncoder(folder: path, backend: backend, allowNonFinite: allowNonFinite)
    if !quiet, let prefix = enc.strippedPrefix {
        note("vlm: note: \(path): every key carries the prefix '\(prefix)' (a model saved inside a wrapper); read without it")
    }
    let heads = enc.model.ignoredHeads
    if !heads.isEmpty && !quiet {
        note("vlm: note: \(path): ignoring \(heads.count) task-head tensors (\(heads.prefix(3).joined(separator: ", "))\(heads.count > 3 ? ", …" : "")); using the encoder only")
    }
    return enc
}

// MARK: - CLIP

/// True when `spec` names a CLIP checkpoint: a folder with open_clip_config.json, or with a
/// config.json whose model_type is clip, or holding a TorchScript archive; such an archive
/// (OpenAI's RN50.pt…); a registry name of one; or `--clip-config`'s "open_clip:NAME:PATH".
public func isCLIPModel(_ spec: String?) -> Bool {
    guard let spec, !spec.hasPrefix("synthetic:") else { return false }
    return CLIPCheckpointFiles.isCLIPFolder(resolvedCLIPSpec(spec))
}

/// A CLIP checkpoint's config and files (any form `isCLIPModel` accepts).
public func locateCLIP(_ spec: String) throws -> CLIPCheckpointFiles {
    try CLIPCheckpointFiles.locate(folder: resolvedCLIPSpec(spec))
}

/// One checkpoint under any spelling (a registry name, a relative path, a trailing slash, a
/// symbolic link; --clip-config's form with its path so resolved): what a service caches it by.
public func canonicalModelSpec(_ spec: String) -> String {
    let resolved = resolvedCLIPSpec(spec)
    func real(_ p: String) -> String { (try? resolveSymlinks((p as NSString).standardizingPath)) ?? p }
    if let (name, path) = CLIPCheckpointFiles.configured(resolved) { return CLIPCheckpointFiles.configuredPrefix + name + ":" + real(path) }
    return resolved.hasPrefix("synthetic:") ? resolved : real(resolved)
}

/// The name a server shows for a model argument: its folder's or file's last component (the
/// path of --clip-config's form).
public func displayModelName(_ spec: String) -> String {
    let path = CLIPCheckpointFiles.configured(spec)?.path ?? spec
    return URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
}

/// A registry name resolved to its folder, the path of --clip-config's form too.
func resolvedCLIPSpec(_ spec: String) -> String {
    if let (name, path) = CLIPCheckpointFiles.configured(spec) {
        return CLIPCheckpointFiles.configuredPrefix + name + ":" + resolveModelSpec(path, defaultName: defaultResNetName)
    }
    return resolveModelSpec(spec, defaultName: defaultResNetName)
}

/// A CLIP checkpoint's config and both towers, prepared for `backend`.
public func loadCLIP(_ folder: String, backend: any Backend, quiet: Bool = false, allowNonFinite: Bool = false) throws -> (CLIPModel, CLIPCheckpointFiles) {
    let files = try locateCLIP(folder)
    let weights = try openWeights(files.weightsPath)
    if !quiet, let stripped = weights as? PrefixStrippedCheckpoint {
        note("vlm: note: \(files.weightsPath): every key carries the prefix '\(stripped.prefix)' (a model saved inside a wrapper); read without it")
    }
    let model = try CLIPModel(source: weights, settings: files.settings, backend: backend, allowNonFinite: allowNonFinite)
    if model.layout != files.layout {
        throw WeightError.unrecognized(source: files.weightsPath, reason: "holds a \(model.layout.rawValue) CLIP, but its settings come from a \(files.layout.rawValue) config (\(files.configPath))")
    }
    if let size = files.imageSize, size != model.vision.imageSize {
        throw WeightError.unrecognized(source: files.configPath, reason: "says image size \(size), but the image tower's position embedding is for \(model.vision.imageSize)-px images")
    }
    return (model, files)
}

/// The tokenizer of a CLIP folder: Hugging Face's layout reads its tokenizer.json; open_clip's
/// reads open_clip's vocabulary file, bpe_simple_vocab_16e6.txt.gz, from the folder or from
/// `vlm models fetch clip-bpe`'s folder (open_clip's hub folders do not hold it: it ships in the
/// open-clip-torch wheel),
/// and cleans texts as open_clip does.
public func loadCLIPTokenizer(_ files: CLIPCheckpointFiles) throws -> CLIPTokenizer {
    func p(_ name: String) -> String { (files.folder as NSString).appendingPathComponent(name) }
    switch files.layout {
    case .huggingFace:
        guard FileStatus.of(p("tokenizer.json")) != nil else {
            throw WeightError.unrecognized(source: files.folder, reason: "no tokenizer.json: vlm reads a Hugging Face CLIP folder's tokenizer from tokenizer.json")
        }
        return try CLIPTokenizer(tokenizerJSON: p("tokenizer.json"))
    case .openCLIP:
        let name = CLIPTokenizer.openCLIPVocabularyName
        let fetched = (resolveModelsFolder("clip-bpe") as NSString).appendingPathComponent(name)
        for path in [p(name), fetched] where FileStatus.of(path) != nil {
            return try CLIPTokenizer(openCLIPVocabulary: path)
        }
        throw WeightError.unrecognized(source: files.folder, reason: "no \(name) here or in \(fetched): open_clip's tokenizer needs its vocabulary file (`vlm models fetch clip-bpe`, or copy it from the open-clip-torch wheel into the folder)")
    }
}
