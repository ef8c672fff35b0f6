// swift-tools-version:5.10
// vlm: images and texts to feature vectors on the CPU (ResNet + BERT over OpenBLAS).
import PackageDescription

let package = Package(
    name: "vlm",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vlm", targets: ["vlm"]),
        .library(name: "VLMModels", targets: ["VLMModels"]),
        .library(name: "VLMTokenizer", targets: ["VLMTokenizer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: - C shims (system libraries from Debian's -dev packages)
        .systemLibrary(
            name: "COpenBLAS",
            path: "CShims/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]
        ),
        // MARK: - Library targets: shims → core → io → models → CLI
        .target(name: "VLMCore", dependencies: ["COpenBLAS"]),
        .target(name: "VLMIO", dependencies: ["VLMCore"]),
        .target(name: "VLMTokenizer"),
        .target(name: "VLMModels", dependencies: ["VLMCore", "VLMIO", "VLMTokenizer"]),
        .executableTarget(
            name: "vlm",
            dependencies: ["VLMModels", "VLMIO", "VLMCore", "VLMTokenizer",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // MARK: - Tests (fixtures exported from PyTorch by scripts/export_fixtures.py)
        .testTarget(name: "VLMCoreTests", dependencies: ["VLMCore"]),
        .testTarget(name: "VLMIOTests", dependencies: ["VLMIO"]),
        .testTarget(name: "VLMTokenizerTests", dependencies: ["VLMTokenizer"]),
        .testTarget(name: "VLMModelsTests", dependencies: ["VLMModels"]),
        .testTarget(name: "VLMCLITests", dependencies: ["VLMIO", "vlm"]),
    ]
)
