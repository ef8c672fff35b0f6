// Seeded synthetic checkpoints in the exact layout of the real ones, for benchmarks and demos
// when no weights are on disk. They go through the same loader as a real checkpoint.

import Foundation
import VLMCore

public enum Synthetic {
    /// A torchvision-layout ResNet state dict (resnet18/34/50/101/152) with He-normal
    /// convolutions, randomised BatchNorm and a `numClasses` fc.
    public static func resnet(depth: Int, numClasses: Int = 1000, seed: UInt64 = 0) -> MemoryTensorSource? {
        guard let spec = resnetDepths.first(where: { $0.depth == depth }) else { return nil }
        var rng = SeededRandom(seed: seed)
        var state: [String: Tensor] = [:]
        var order: [String] = []
        func add(_ key: String, _ t: Tensor) { state[key] = t; order.append(key) }
        func conv(_ key: String, _ cout: Int, _ cin: Int, _ k: Int) {
            let std = (2.0 / Float(cout * k * k)).squareRoot()
            add(key + ".weight", Tensor(shape: [cout, cin, k, k], data: rng.normals(cout * cin * k * k, std: std)))
        }
        func bn(_ key: String, _ c: Int) {
            add(key + ".weight", Tensor(shape: [c], data: rng.uniforms(c, low: 0.5, high: 1.0)))
            add(key + ".bias", Tensor(shape: [c], data: rng.normals(c, std: 0.1)))
            add(key + ".running_mean", Tensor(shape: [c], data: rng.normals(c, std: 0.1)))
            add(key + ".running_var", Tensor(shape: [c], data: rng.uniforms(c, low: 0.5, high: 1.5)))
        }
        let e = spec.block.expansion
        conv("conv1", 64, 3, 7)
        bn("bn1", 64)
        var inplanes = 64
        for (s, count) in spec.layers.enumerated() {
            let planes = 64 << s
            for j in 0..<count {
                let p = "layer\(s + 1).\(j)"
                let stride = (s > 0 && j == 0) ? 2 : 1
                switch spec.block {
                case .basic:
                    conv(p + ".conv1", planes, inplanes, 3); bn(p + ".bn1", planes)
                    conv(p + ".conv2", planes, planes, 3); bn(p + ".bn2", planes)
                case .bottleneck:
                    conv(p + ".conv1", planes, inplanes, 1); bn(p + ".bn1", planes)
                    conv(p + ".conv2", planes, planes, 3); bn(p + ".bn2", planes)
                    conv(p + ".conv3", planes * e, planes, 1); bn(p + ".bn3", planes * e)
                }
                if stride != 1 || inplanes != planes * e {
                    conv(p + ".downsample.0", planes * e, inplanes, 1); bn(p + ".downsample.1", planes * e)
                }
                inplanes = planes * e
            }
        }
        let bound = 1 / Float(inplanes).squareRoot()
        add("fc.weight", Tensor(shape: [numClasses, inplanes], data: rng.uniforms(numClasses * inplanes, low: -bound, high: bound)))
        add("fc.bias", Tensor(shape: [numClasses], data: rng.uniforms(numClasses, low: -bound, high: bound)))
        return MemoryTensorSource(name: "synthetic-resnet\(depth)(seed \(seed))", state: state, order: order)
    }
}

extension Synthetic {
    /// BERT configurations the benchmarks know by name.
    public static func bertConfig(_ name: String) -> BertConfig? {
        let json: String
        switch name {
        case "bert-base":
            json = #"{"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,"intermediate_size":3072,"hidden_act":"gelu","layer_norm_eps":1e-12,"max_position_embeddings":512,"type_vocab_size":2,"vocab_size":30522}"#
        case "minilm":
            json = #"{"hidden_size":384,"num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,"hidden_act":"gelu","layer_norm_eps":1e-12,"max_position_embeddings":512,"type_vocab_size":2,"vocab_size":30522}"#
        default:
            return nil
        }
        return try? JSONDecoder().decode(BertConfig.self, from: Data(json.utf8))
    }

    /// A BertModel-layout state dict with N(0, 0.02) weights (transformers' initialisation),
    /// LayerNorm near identity and small biases.
    public static func bert(_ c: BertConfig, seed: UInt64 = 0) -> MemoryTensorSource {
        var rng = SeededRandom(seed: seed)
        var state: [String: Tensor] = [:]
        let h = c.hiddenSize, i = c.intermediateSize
        func w(_ key: String, _ shape: [Int]) { state[key] = Tensor(shape: shape, data: rng.normals(shape.reduce(1, *), std: 0.02)) }
        func b(_ key: String, _ n: Int) { state[key] = Tensor(shape: [n], data: rng.normals(n, std: 0.02)) }
        func ln(_ key: String) {
            state[key + ".weight"] = Tensor(shape: [h], data: rng.normals(h, std: 0.05, mean: 1))
            b(key + ".bias", h)
        }
        w("embeddings.word_embeddings.weight", [c.vocabSize, h])
        w("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, h])
        w("embeddings.token_type_embeddings.weight", [c.typeVocabSize, h])
        ln("embeddings.LayerNorm")
        for l in 0..<c.numHiddenLayers {
            let p = "encoder.layer.\(l)."
            for n in ["query", "key", "value"] { w(p + "attention.self.\(n).weight", [h, h]); b(p + "attention.self.\(n).bias", h) }
            w(p + "attention.output.dense.weight", [h, h]); b(p + "attention.output.dense.bias", h)
            ln(p + "attention.output.LayerNorm")
            w(p + "intermediate.dense.weight", [i, h]); b(p + "intermediate.dense.bias", i)
            w(p + "output.dense.weight", [h, i]); b(p + "output.dense.bias", h)
            ln(p + "output.LayerNorm")
        }
        w("pooler.dense.weight", [h, h]); b("pooler.dense.bias", h)
        return MemoryTensorSource(name: "synthetic BERT (seed \(seed))", state: state)
    }
}
