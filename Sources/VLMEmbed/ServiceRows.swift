// The service as a batch job's encoder: a kind's encoder (or one wrapping it, such as rows of a
// preprocessed .npy) whose batches the service finishes — so a job's vector is the worker's and
// the server's for the same item and description.

import Foundation
import VLMCore
import VLMModels

/// Rows of `inner`, finished by the service as items of `kind`.
public final class ServiceRows<Inner: RowEncoder>: RowEncoder {
    public let service: EmbeddingService
    public let kind: ItemKind
    public let inner: Inner
    public let dim: Int

    public init(_ service: EmbeddingService, _ kind: ItemKind, _ inner: Inner) throws {
        (self.service, self.kind, self.inner) = (service, kind, inner)
        dim = try service.dim(kind)
    }

    /// The inner encoder's settings with the normalisation in force and the projection: what a
    /// job's fingerprint holds.
    public var settings: [String: String] {
        service.withFinishing(kind, inner.settings)
    }

    public func prepare(_ items: [(id: [UInt8], value: Inner.Value)]) -> (Inner.Prepared, ids: [[UInt8]]) {
        (inner.prepare(items), items.map(\.id))
    }

    public func encode(_ p: (Inner.Prepared, ids: [[UInt8]])) throws -> EncodedBatch {
        try service.finish(kind, try inner.encode(p.0), ids: p.ids)
    }
}

extension ServiceRows: DescribesSpace {
    /// Rows of a preprocessed tensor (embed-image --input-npy) have no preprocessing of the service's.
    public func vectorSpace() throws -> VectorSpace { try service.space(kind, preprocessed: inner is TensorRowEncoder) }
}
