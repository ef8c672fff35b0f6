// What `GET /metrics` reports, in Prometheus' text format (swift-prometheus): requests by
// endpoint and status, request latency, batch sizes in items and tokens, forward-pass time,
// time spent queued, the queue's depth, and the request body bytes held.

import Foundation
import Prometheus

final class ServeMetrics: BatchObserver, @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let queueDepth: Gauge
    private let bodyBytes: Gauge
    private static let latencyBuckets: [Double] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30]
    private static let sizeBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    private static let tokenBuckets: [Double] = [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536]

    init() {
        queueDepth = registry.makeGauge(descriptor: .init(metricName: "vlm_queue_depth", helpText: "Inputs waiting for the model"))
        bodyBytes = registry.makeGauge(descriptor: .init(metricName: "vlm_body_bytes_held",
                                                         helpText: "Request body bytes held at once, counted against --max-buffered-bytes"))
    }

    func request(endpoint: String, status: Int, seconds: Double) {
        registry.makeCounter(descriptor: .init(metricName: "vlm_requests_total", helpText: "HTTP requests answered"),
                             labels: [("endpoint", endpoint), ("status", "\(status)")]).increment()
        registry.makeValueHistogram(descriptor: .init(metricName: "vlm_request_duration_seconds", helpText: "Time from a request's start to its answer"),
                                    labels: [("endpoint", endpoint), ("status", "\(status)")], buckets: Self.latencyBuckets).record(seconds)
    }

    func batchRan(lane: String, requests: Int, items: Int, tokens: Int, seconds: Double) {
        registry.makeValueHistogram(descriptor: .init(metricName: "vlm_batch_size", helpText: "Inputs per forward pass"),
                                    labels: [("kind", lane)], buckets: Self.sizeBuckets).record(Double(items))
        registry.makeValueHistogram(descriptor: .init(metricName: "vlm_batch_requests", helpText: "Requests per forward pass"),
                                    labels: [("kind", lane)], buckets: Self.sizeBuckets).record(Double(requests))
        if lane != "image" {
            registry.makeValueHistogram(descriptor: .init(metricName: "vlm_batch_tokens", helpText: "Tokens per forward pass"),
                                        labels: [("kind", lane)], buckets: Self.tokenBuckets).record(Double(tokens))
        }
        registry.makeValueHistogram(descriptor: .init(metricName: "vlm_batch_duration_seconds", helpText: "Time of a forward pass"),
                                    labels: [("kind", lane)], buckets: Self.latencyBuckets).record(seconds)
        registry.makeCounter(descriptor: .init(metricName: "vlm_inputs_total", helpText: "Inputs embedded"),
                             labels: [("kind", lane)]).increment(by: Int64(items))
    }

    func queueChanged(items: Int) { queueDepth.set(Double(items)) }

    func bodyBytesHeld(_ bytes: Int) { bodyBytes.set(Double(bytes)) }

    func waited(lane: String, seconds: Double) {
        registry.makeValueHistogram(descriptor: .init(metricName: "vlm_queue_wait_seconds", helpText: "Time a request waited for its forward pass"),
                                    labels: [("kind", lane)], buckets: Self.latencyBuckets).record(seconds)
    }
}
