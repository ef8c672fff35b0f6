// swift-tools-version:5.10
// vlm: images and texts to feature vectors on the CPU (ResNet + BERT over OpenBLAS).
import Foundation
import PackageDescription

let package = Package(
    name: "vlm",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vlm", targets: ["vlm"]),
        .library(name: "VLMModels", targets: ["VLMModels"]),
        .library(name: "VLMTokenizer", targets: ["VLMTokenizer"]),
        .library(name: "VLMEmbed", targets: ["VLMEmbed"]),
        .library(name: "VLMJobs", targets: ["VLMJobs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // vlm serve: HTTP (Hummingbird 2 on SwiftNIO), Prometheus metrics, graceful shutdown,
        // multipart uploads.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // SHA-256 (BoringSSL's, with SHA-NI / AVX2 where the CPU has them).
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // MARK: - C shims (system libraries from Debian's -dev packages)
        .systemLibrary(
            name: "COpenBLAS",
            path: "CShims/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]
        ),
        .systemLibrary(
            name: "CImageCodecs",
            path: "CShims/CImageCodecs",
            pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev", "libpng-dev"])]
        ),
        // zlib's crc32, for the CRC-32 of every zip entry a torch checkpoint uses.
        .systemLibrary(
            name: "CZlib",
            path: "CShims/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // Pillow-exact decoding in C: libpng reports errors by longjmp, which must not cross Swift.
        .target(name: "CImageDecode", dependencies: ["CImageCodecs"], path: "CShims/CImageDecode",
                linkerSettings: [.linkedLibrary("turbojpeg"), .linkedLibrary("png16")]),
        // Element-wise transformer kernels built per instruction set, chosen at run time.
        .target(name: "CKernels", path: "CShims/CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]),
        // MARK: - Library targets: shims → core → io → models → CLI
        .target(name: "VLMCore", dependencies: ["COpenBLAS", "CKernels"]),
        .target(name: "VLMIO", dependencies: ["VLMCore", "CKernels", "CZlib", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "VLMTokenizer", dependencies: ["VLMCore", "VLMIO"]),
        .target(name: "VLMImage", dependencies: ["VLMCore", "VLMIO", "CImageDecode", "CKernels"]),
        .target(name: "VLMModels", dependencies: ["VLMCore", "VLMIO", "VLMTokenizer"]),
        // Model locations, the registry, fetching and loading.
        .target(name: "VLMCatalog", dependencies: ["VLMCore", "VLMIO", "VLMImage", "VLMModels", "VLMTokenizer"]),
        // The one way from an item to a vector: the encoders, the embedding service built from a
        // Codable description, the shared item error, the worker protocol.
        .target(name: "VLMEmbed", dependencies: ["VLMCore", "VLMIO", "VLMImage", "VLMModels", "VLMTokenizer", "VLMCatalog"]),
        // Batch jobs: item sources, the resumable partial state, outputs, progress.
        .target(name: "VLMJobs", dependencies: ["VLMCore", "VLMIO", "VLMImage", "VLMModels", "VLMTokenizer", "VLMEmbed"]),
        .target(name: "VLMBench", dependencies: ["VLMCore", "VLMIO", "VLMModels", "VLMCatalog"]),
        .target(name: "VLMServe", dependencies: [
            "VLMEmbed", "VLMModels", "VLMIO", "VLMCore", "VLMTokenizer",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "MultipartKit", package: "multipart-kit"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ]),
        // The command line as a library, so the vlm binary and the tests' hook binary run the same commands.
        .target(
            name: "VLMCLI",
            dependencies: ["VLMBench", "VLMCatalog", "VLMEmbed", "VLMJobs", "VLMServe", "VLMModels", "VLMIO", "VLMCore", "VLMTokenizer", "VLMImage",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/vlm"
        ),
        .executableTarget(name: "vlm", dependencies: ["VLMCLI"], path: "Sources/vlm-main"),
        // vlm with test seams set from its own environment (pause a job after a unit, crash the
        // worker on an id, no overlap of units): the tests reach those moments through it, and
        // no user's vlm reads such a variable.
        .executableTarget(name: "vlm-test-hooks", dependencies: ["VLMCLI", "VLMJobs", "VLMEmbed", "VLMIO"], path: "Tests/Hooks"),
        // MARK: - Tests (fixtures exported from PyTorch by scripts/export_fixtures.py)
        .testTarget(name: "VLMCoreTests", dependencies: ["VLMCore"]),
        .testTarget(name: "VLMIOTests", dependencies: ["VLMIO"]),
        .testTarget(name: "VLMTokenizerTests", dependencies: ["VLMTokenizer"]),
        .testTarget(name: "VLMImageTests", dependencies: ["VLMImage"]),
        .testTarget(name: "VLMModelsTests", dependencies: ["VLMModels"]),
        .testTarget(name: "VLMJobsTests", dependencies: ["VLMEmbed", "VLMJobs", "FuzzHarness"]),
        // What each fuzz target does with an input; the fuzzers and the corpus replay test share it.
        .target(name: "FuzzHarness", dependencies: ["VLMEmbed", "VLMJobs", "VLMImage", "VLMModels", "VLMTokenizer", "VLMIO"], path: "Fuzz/Harness"),
        // The server's routes and error answers driven in-process by Hummingbird's testing support.
        .testTarget(name: "VLMServeTests", dependencies: ["VLMServe", "VLMEmbed", "VLMJobs",
                                                          .product(name: "HummingbirdTesting", package: "hummingbird")]),
        .testTarget(name: "VLMCLITests", dependencies: ["VLMIO", "VLMModels", "vlm", "vlm-test-hooks"]),
    ]
)

// MARK: - Fuzz targets: only with VLM_FUZZ=1, as `make fuzz` builds them (with -sanitize=fuzzer,
// address, into .build-fuzz), so normal builds and `make test` never see them.
if ProcessInfo.processInfo.environment["VLM_FUZZ"] == "1" {
    package.targets.append(.target(name: "FuzzSupport", path: "Fuzz/FuzzSupport"))
    for name in ["FuzzNPY", "FuzzSafetensors", "FuzzTokenizer", "FuzzImage", "FuzzJSONLines", "FuzzPickle", "FuzzTorch", "FuzzFeatures", "FuzzShards", "FuzzCLIP"] {
        package.targets.append(.executableTarget(name: name, dependencies: ["FuzzSupport", "FuzzHarness"],
                                                 path: "Fuzz/Targets/\(name)", swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
    }
}
