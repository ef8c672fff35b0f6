// Seeded synthetic checkpoints in the exact layout of the real ones, for benchmarks and demos
// when no weights are on disk. They go through the same loader as a real checkpoint.

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
