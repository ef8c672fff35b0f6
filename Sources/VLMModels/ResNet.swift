// ResNet in torchvision's layout (timm's ResNet checkpoints use the same keys): conv1/bn1 stem,
// 3×3/2 max pool, four stages layer1…layer4 of BasicBlock (18, 34) or Bottleneck (50, 101, 152;
// stride on the 3×3 as torchvision's v1.5), global average pool, optional fc.
// Upstream: torchvision/models/resnet.py. Activations are NHWC with the batch folded into GEMM's
// M; every BatchNorm is folded into the convolution before it at load.

import Dispatch
import Foundation
import VLMCore

// MARK: - Configuration

public enum ResNetBlock: String, Sendable {
    case basic, bottleneck
    public var expansion: Int { self == .basic ? 1 : 4 }
}

/// The depth table, as data: blocks per stage for each standard depth.
public let resnetDepths: [(depth: Int, block: ResNetBlock, layers: [Int])] = [
    (18, .basic, [2, 2, 2, 2]), (34, .basic, [3, 4, 6, 3]),
    (50, .bottleneck, [3, 4, 6, 3]), (101, .bottleneck, [3, 4, 23, 3]), (152, .bottleneck, [3, 8, 36, 3]),
]

public struct ResNetConfig: Equatable, Sendable {
    public var block: ResNetBlock
    public var layers: [Int]
    public var inChannels: Int
    public var stemChannels: Int
    /// Output channels of each stage (planes · expansion in torchvision).
    public var stageChannels: [Int]
    /// Channels inside each stage's blocks (Bottleneck's width; BasicBlock's planes).
    public var stageWidths: [Int]
    public var numClasses: Int?

    public var featureSize: Int { stageChannels.last! }

    /// "resnet50", or a description of a non-standard shape.
    public var name: String {
        let standardWidths = [64, 128, 256, 512]
        if let d = resnetDepths.first(where: { $0.block == block && $0.layers == layers }),
           stemChannels == 64, stageChannels == standardWidths.map({ $0 * block.expansion }) {
            if stageWidths == standardWidths { return "resnet\(d.depth)" }
            if block == .bottleneck, stageWidths == standardWidths.map({ $0 * 2 }) { return "wide_resnet\(d.depth)_2" }
        }
        return "resnet (custom \(block.rawValue) \(layers), widths \(stageWidths), channels \(stageChannels))"
    }
}

// MARK: - Layers

/// A convolution with its BatchNorm folded in, its weights prepared by the backend that runs it.
public struct FoldedConv {
    public let weights: ConvolutionWeights
    public var spec: ConvolutionSpec { weights.spec }
    public var inChannels: Int { spec.inChannels }
    public var outChannels: Int { spec.outChannels }

    /// Loads "<conv>.weight" (Cout,Cin,K,K) and "<bn>.{weight,bias,running_mean,running_var}".
    static func load(_ r: WeightReader, conv: String, bn: String, inChannels: Int, outChannels: Int?,
                     kernel: Int, stride: Int, backend: any Backend, eps: Float = 1e-5) throws -> FoldedConv {
        let b = r.pp(bn)
        // The BatchNorm's size says how many output channels the convolution must have, so a
        // convolution whose dimensions are swapped is named, not the BatchNorm after it.
        let bnShape = b.shape(of: "weight")
        let expectedOut = outChannels ?? (bnShape?.count == 1 ? bnShape![0] : nil)
        let w = try r.tensor("\(conv).weight", [expectedOut, inChannels, kernel, kernel])
        let cout = w.shape[0]
        let gamma = try b.tensor("weight", exact: [cout]), beta = try b.tensor("bias", exact: [cout])
        let mean = try b.tensor("running_mean", exact: [cout]), variance = try b.tensor("running_var", exact: [cout])
        if let bad = variance.data.firstIndex(where: { $0 < 0 }) {
            throw WeightError.unrecognized(source: r.store.source.sourceName,
                                           reason: "tensor '\(b.key("running_var"))' has a negative variance (\(variance.data[bad]) at channel \(bad)); the checkpoint is damaged")
        }
        var oihw = w.data
        let bias = foldBatchNorm(weight: &oihw, bias: nil, outChannels: cout, gamma: gamma.data, beta: beta.data,
                                 mean: mean.data, variance: variance.data, eps: eps)
        let spec = ConvolutionSpec(inChannels: inChannels, outChannels: cout, kernelH: kernel, kernelW: kernel,
                                   stride: stride, padding: kernel / 2)
        return FoldedConv(weights: backend.prepareConvolution(
            spec, weight: convWeightOIHWToHWIO(oihw, cout: cout, cin: inChannels, kh: kernel, kw: kernel), bias: bias))
    }

    public func geometry(batch: Int, height: Int, width: Int) -> ConvGeometry {
        spec.geometry(batch: batch, height: height, width: width)
    }

    /// out is (N,OH,OW,Cout), x is (N,H,W,Cin) as `Activation`.
    func forward(_ backend: any Backend, _ x: Activation, relu: Bool, residual: Activation? = nil) -> Activation {
        let g = geometry(batch: x.n, height: x.h, width: x.w)
        precondition(x.c == inChannels, "conv expects \(inChannels) channels, got \(x.c)")
        var out = Activation(n: x.n, h: g.outHeight, w: g.outWidth, c: outChannels)
        if let residual { precondition(residual.data.count == out.data.count, "residual shape differs from output") }
        out.data.withUnsafeMutableBufferPointer { o in
            x.data.withUnsafeBufferPointer { i in
                withOptionalPointer(residual?.data) { res in
                    backend.conv2d(out: o.baseAddress!, inp: i.baseAddress!, weights: weights, batch: x.n, height: x.h,
                                   width: x.w, residual: res, relu: relu)
                }
            }
        }
        return out
    }
}

extension FoldedConv {
    /// `forward`, timed into `times` under `name` when it is given.
    func forward(_ backend: any Backend, _ x: Activation, relu: Bool, residual: Activation? = nil,
                 times: LayerTimes?, name: String) -> Activation {
        guard let times else { return forward(backend, x, relu: relu, residual: residual) }
        return times.measure(name, geometry(batch: x.n, height: x.h, width: x.w)) {
            forward(backend, x, relu: relu, residual: residual)
        }
    }
}

/// An NHWC activation.
struct Activation {
    var n, h, w, c: Int
    var data: [Float]
    /// Uninitialised storage: every layer writes all of its output.
    init(n: Int, h: Int, w: Int, c: Int) {
        (self.n, self.h, self.w, self.c) = (n, h, w, c)
        let count = n * h * w * c
        data = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }
    init(n: Int, h: Int, w: Int, c: Int, data: [Float]) {
        precondition(data.count == n * h * w * c)
        (self.n, self.h, self.w, self.c) = (n, h, w, c)
        self.data = data
    }
}

/// torchvision's BasicBlock (conv1 3×3 stride s, conv2 3×3) or Bottleneck (conv1 1×1, conv2 3×3
/// stride s, conv3 1×1), with `downsample.0`/`downsample.1` (1×1 conv stride s + BN) when shapes change.
public struct ResNetBlockLayer {
    public let convs: [FoldedConv]
    public let downsample: FoldedConv?

    static func load(_ r: WeightReader, block: ResNetBlock, inChannels: Int, width: Int?, outChannels: Int?,
                     stride: Int, backend: any Backend) throws -> ResNetBlockLayer {
        var convs: [FoldedConv] = []
        switch block {
        case .basic:
            let c1 = try FoldedConv.load(r, conv: "conv1", bn: "bn1", inChannels: inChannels, outChannels: width ?? outChannels,
                                         kernel: 3, stride: stride, backend: backend)
            let c2 = try FoldedConv.load(r, conv: "conv2", bn: "bn2", inChannels: c1.outChannels,
                                         outChannels: outChannels ?? c1.outChannels, kernel: 3, stride: 1, backend: backend)
            convs = [c1, c2]
        case .bottleneck:
            let c1 = try FoldedConv.load(r, conv: "conv1", bn: "bn1", inChannels: inChannels, outChannels: width, kernel: 1, stride: 1,
                                         backend: backend)
            let c2 = try FoldedConv.load(r, conv: "conv2", bn: "bn2", inChannels: c1.outChannels, outChannels: c1.outChannels,
                                         kernel: 3, stride: stride, backend: backend)
            let c3 = try FoldedConv.load(r, conv: "conv3", bn: "bn3", inChannels: c2.outChannels, outChannels: outChannels,
                                         kernel: 1, stride: 1, backend: backend)
            convs = [c1, c2, c3]
        }
        let out = convs.last!.outChannels
        var downsample: FoldedConv?
        if r.contains("downsample.0.weight") {
            downsample = try FoldedConv.load(r.pp("downsample"), conv: "0", bn: "1", inChannels: inChannels, outChannels: out,
                                             kernel: 1, stride: stride, backend: backend)
        } else if stride != 1 || inChannels != out {
            throw WeightError.missingTensor(source: r.store.source.sourceName, key: r.key("downsample.0.weight"))
        }
        return ResNetBlockLayer(convs: convs, downsample: downsample)
    }

    func forward(_ backend: any Backend, _ x: Activation, times: LayerTimes? = nil, name: String = "") -> Activation {
        let identity = downsample.map { $0.forward(backend, x, relu: false, times: times, name: "\(name).downsample") } ?? x
        var h = x
        for (i, conv) in convs.dropLast().enumerated() {
            h = conv.forward(backend, h, relu: true, times: times, name: "\(name).conv\(i + 1)")
        }
        return convs.last!.forward(backend, h, relu: true, residual: identity, times: times, name: "\(name).conv\(convs.count)")
    }
}

// MARK: - Per-layer timing

/// Wall time of every convolution of a ResNet forward pass, kept as the minimum over passes
/// (this machine's timings drift too much for one pass to mean anything): `vlm bench --layers`.
public final class LayerTimes {
    public struct Layer {
        public var name: String
        public var geometry: ConvGeometry
        public var bestSeconds: Double
    }
    public private(set) var layers: [Layer] = []
    private var next = 0

    public init() {}

    func startPass() { next = 0 }

    func measure<R>(_ name: String, _ g: ConvGeometry, _ body: () -> R) -> R {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if next < layers.count && layers[next].name == name && layers[next].geometry == g {
            layers[next].bestSeconds = min(layers[next].bestSeconds, dt)
        } else {
            layers.insert(Layer(name: name, geometry: g, bestSeconds: dt), at: next)
        }
        next += 1
        return r
    }
}

// MARK: - Model

public struct ResNetOutput {
    /// (N, featureSize): the global average pool of the last stage.
    public var pooled: Tensor
    /// (N, numClasses) when the checkpoint has `fc`.
    public var logits: Tensor?
}

public final class ResNet {
    public let config: ResNetConfig
    public let stem: FoldedConv
    public let stages: [[ResNetBlockLayer]]
    /// The fc layer (numClasses, featureSize), when the checkpoint has one.
    public let fc: LinearWeights?
    /// The backend that prepared the weights and runs every forward pass.
    public let backend: any Backend
    /// Where the weights came from (a file, or a synthetic model's name), for messages.
    public let sourceName: String
    /// When set, every convolution of every forward pass is timed into it.
    public var layerTimes: LayerTimes?

    /// Recognises the architecture from the keys and loads it for `backend`, which prepares
    /// each layer's weights in the forms it runs; every tensor must be used.
    /// `allowNonFinite` loads tensors holding NaN or infinity instead of refusing them.
    public init(source original: TensorSource, backend: any Backend, allowNonFinite: Bool = false) throws {
        self.backend = backend
        sourceName = original.sourceName
        let source: TensorSource = try ResNet.torchvisionNames(original)
        let store = WeightStore(source, allowNonFinite: allowNonFinite)
        store.ignore { $0.hasSuffix(".num_batches_tracked") }
        let r = store.root
        let name = source.sourceName

        guard let stemShape = r.shape(of: "conv1.weight") else {
            if source.keys.contains(where: { $0.hasPrefix("conv1.0.") }) {
                throw WeightError.unrecognized(source: name, reason: "deep-stem ResNet variants (conv1.0.*, e.g. timm's resnet50d) are not supported")
            }
            throw WeightError.missingTensor(source: name, key: "conv1.weight")
        }
        guard stemShape.count == 4 else {
            throw WeightError.shapeMismatch(source: name, key: "conv1.weight", expected: [nil, nil, 7, 7], got: stemShape)
        }
        let block: ResNetBlock = r.contains("layer1.0.conv3.weight") ? .bottleneck : .basic
        var layers: [Int] = []
        for s in 1...4 {
            var count = 0
            while r.contains("layer\(s).\(count).conv1.weight") { count += 1 }
            if count == 0 { throw WeightError.missingTensor(source: name, key: "layer\(s).0.conv1.weight") }
            layers.append(count)
        }

        stem = try FoldedConv.load(r, conv: "conv1", bn: "bn1", inChannels: stemShape[1], outChannels: nil, kernel: 7, stride: 2,
                                   backend: backend)
        var channels = stem.outChannels
        var stages: [[ResNetBlockLayer]] = []
        var stageChannels: [Int] = [], stageWidths: [Int] = []
        for (s, count) in layers.enumerated() {
            var blocks: [ResNetBlockLayer] = []
            var width: Int?, out: Int?
            for j in 0..<count {
                let b = try ResNetBlockLayer.load(r.pp("layer\(s + 1)").pp("\(j)"), block: block, inChannels: channels,
                                                  width: width, outChannels: out, stride: (s > 0 && j == 0) ? 2 : 1,
                                                  backend: backend)
                width = b.convs[0].outChannels
                out = b.convs.last!.outChannels
                channels = out!
                blocks.append(b)
            }
            stages.append(blocks)
            stageChannels.append(channels)
            stageWidths.append(width!)
        }
        self.stages = stages

        var numClasses: Int?
        if r.contains("fc.weight") {
            let w = try r.tensor("fc.weight", [nil, channels])
            let b = try r.tensor("fc.bias", exact: [w.shape[0]])
            fc = backend.prepareLinear(weight: w.data, bias: b.data, inFeatures: channels, outFeatures: w.shape[0])
            numClasses = w.shape[0]
        } else {
            if r.contains("fc.bias") { throw WeightError.missingTensor(source: name, key: "fc.weight") }
            fc = nil
        }
        config = ResNetConfig(block: block, layers: layers, inChannels: stemShape[1], stemChannels: stem.outChannels,
                              stageChannels: stageChannels, stageWidths: stageWidths, numClasses: numClasses)
        try store.checkAllUsed()
    }

    /// timm's checkpoints of torchvision's layout (resnet18–152, wide_resnet) read as they are;
    /// a classifier under `head.fc` (timm's ClassifierHead) is read as `fc`. timm's other
    /// ResNets are other architectures, refused by name.
    static func torchvisionNames(_ source: TensorSource) throws -> TensorSource {
        let keys = source.keys
        if keys.contains("stem.conv.weight") && keys.contains(where: { $0.hasPrefix("stages.") }) {
            throw WeightError.unrecognized(source: source.sourceName, reason: "a pre-activation ResNetV2 (stem.conv, stages.*: timm's resnetv2_*) is not supported; vlm runs torchvision's ResNet layout (timm's resnet18–152 and wide_resnet too)")
        }
        guard keys.contains(where: { $0.hasPrefix("head.fc.") }), !keys.contains(where: { $0.hasPrefix("fc.") }) else { return source }
        var map: [String: String] = [:]
        for k in keys { map[k.hasPrefix("head.fc.") ? "fc." + k.dropFirst("head.fc.".count) : k] = k }
        return MappedTensorSource(base: source, map: map)
    }

    /// Convolution shapes for an (N, C, H, W) input, in execution order, with the fc's FLOPs.
    public func flops(height: Int, width: Int) -> Double {
        var total = 0.0
        var g = stem.geometry(batch: 1, height: height, width: width)
        total += g.flops
        var h = pooledSize(g.outHeight, size: 3, stride: 2, padding: 1), w = pooledSize(g.outWidth, size: 3, stride: 2, padding: 1)
        for stage in stages {
            for b in stage {
                if let d = b.downsample { total += d.geometry(batch: 1, height: h, width: w).flops }
                for c in b.convs {
                    g = c.geometry(batch: 1, height: h, width: w)
                    total += g.flops
                    (h, w) = (g.outHeight, g.outWidth)
                }
            }
        }
        if let n = config.numClasses { total += 2 * Double(n * config.featureSize) }
        return total
    }

    /// Input pixels one pass through the network holds by default: 8 images of 224². Larger
    /// batches run as consecutive passes of that many images, which keeps each layer's
    /// activations and im2col tiles near the caches: measured, ResNet-50 ran ~25% slower per
    /// image at batch 32 than at batch 8 when the whole batch went through at once, and its
    /// peak memory grows with the pass, not the batch (BENCHMARKS.md §4).
    public static let pixelsPerPass = 8 * 224 * 224

    /// Images per pass for an input of height × width (at least 1).
    public static func imagesPerPass(height: Int, width: Int) -> Int {
        max(1, pixelsPerPass / max(1, height * width))
    }

    /// input is (N, C, H, W) float32, already normalised. Returns pooled features and logits,
    /// running at most `imagesPerPass` images (default: `imagesPerPass(height:width:)`) at a
    /// time. Each image's result does not depend on the others in its batch.
    public func forward(_ input: Tensor, imagesPerPass: Int? = nil) -> ResNetOutput {
        Threads.run { forwardOnEngine(input, imagesPerPass: imagesPerPass) }
    }

    private func forwardOnEngine(_ input: Tensor, imagesPerPass: Int?) -> ResNetOutput {
        precondition(input.rank == 4 && input.shape[1] == config.inChannels,
                     "ResNet input must be (N, \(config.inChannels), H, W), got \(input.shape)")
        let n = input.shape[0]
        let per = max(1, imagesPerPass ?? ResNet.imagesPerPass(height: input.shape[2], width: input.shape[3]))
        if n <= per { return forwardPass(input) }
        var pooled: [Float] = [], logits: [Float] = []
        var start = 0
        while start < n {
            let out = forwardPass(input.rows(start..<min(n, start + per)))
            pooled += out.pooled.data
            if let l = out.logits { logits += l.data }
            start += per
        }
        let features = pooled.count / n
        return ResNetOutput(pooled: Tensor(shape: [n, features], data: pooled),
                            logits: config.numClasses.map { Tensor(shape: [n, $0], data: logits) })
    }

    private func forwardPass(_ input: Tensor) -> ResNetOutput {
        let n = input.shape[0]
        let nhwc = nchwToNHWC(input)
        var x = Activation(n: n, h: nhwc.shape[1], w: nhwc.shape[2], c: nhwc.shape[3], data: nhwc.data)
        layerTimes?.startPass()
        x = stem.forward(backend, x, relu: true, times: layerTimes, name: "conv1")
        var pooled = Activation(n: n, h: pooledSize(x.h, size: 3, stride: 2, padding: 1),
                                w: pooledSize(x.w, size: 3, stride: 2, padding: 1), c: x.c)
        pooled.data.withUnsafeMutableBufferPointer { o in
            x.data.withUnsafeBufferPointer { i in
                maxPool2dForward(out: o.baseAddress!, inp: i.baseAddress!, n: n, h: x.h, w: x.w, c: x.c,
                                 size: 3, stride: 2, padding: 1)
            }
        }
        x = pooled
        for (s, stage) in stages.enumerated() {
            for (j, b) in stage.enumerated() { x = b.forward(backend, x, times: layerTimes, name: "layer\(s + 1).\(j)") }
        }
        var features = [Float](repeating: 0, count: n * x.c)
        features.withUnsafeMutableBufferPointer { o in
            x.data.withUnsafeBufferPointer { i in
                globalAvgPoolForward(out: o.baseAddress!, inp: i.baseAddress!, n: n, h: x.h, w: x.w, c: x.c)
            }
        }
        var logits: Tensor?
        if let fc {
            var out = [Float](repeating: 0, count: n * fc.outFeatures)
            out.withUnsafeMutableBufferPointer { o in
                features.withUnsafeBufferPointer { f in backend.linear(out: o.baseAddress!, inp: f.baseAddress!, rows: n, weights: fc) }
            }
            logits = Tensor(shape: [n, fc.outFeatures], data: out)
        }
        return ResNetOutput(pooled: Tensor(shape: [n, x.c], data: features), logits: logits)
    }
}

// MARK: - Classification

/// Indices of the k largest values, largest first; ties by lower index.
public func topIndices(_ p: [Float], _ k: Int) -> [Int] {
    let order = p.indices.sorted { a, b in p[a] != p[b] ? p[a] > p[b] : a < b }
    return Array(order.prefix(k))
}

public func softmax(_ x: [Float]) -> [Float] {
    let m = x.max() ?? 0
    let e = x.map { Double(expf($0 - m)) }
    let s = e.reduce(0, +)
    return e.map { Float($0 / s) }
}
