// The concat fusion: an image vector and a text vector side by side, [N, D_image + D_text],
// each part optionally L2-normalised first so neither dominates by scale.
//
// The seed snippet concatenates ResNet-50's output (logits, [1, 1000]) with BERT's
// last_hidden_state ([1, T, 768]) along dim 1, which fails: the ranks differ. What it means to
// do is put one image vector and one text vector together; vlm pools the text to [N, H] first
// (the model's pooling) and concatenates along the feature axis. `--image-layer logits`
// reproduces the snippet's choice of image output; the default, pooled, is the 2048-d feature
// most uses want.

import VLMCore

public enum Fusion {
    /// image (N, Di) and text (N, Dt) → (N, Di + Dt).
    public static func concat(image: Tensor, text: Tensor, normalizeParts: Bool) -> Tensor {
        precondition(image.rank == 2 && text.rank == 2 && image.shape[0] == text.shape[0],
                     "fusion needs (N, Di) and (N, Dt), got \(image.shape) and \(text.shape)")
        let n = image.shape[0], di = image.shape[1], dt = text.shape[1]
        var out: [Float] = []
        out.reserveCapacity(n * (di + dt))
        for i in 0..<n {
            var a = Array(image.data[(i * di)..<((i + 1) * di)])
            var b = Array(text.data[(i * dt)..<((i + 1) * dt)])
            if normalizeParts { l2Normalize(&a); l2Normalize(&b) }
            out += a
            out += b
        }
        return Tensor(shape: [n, di + dt], data: out)
    }
}
