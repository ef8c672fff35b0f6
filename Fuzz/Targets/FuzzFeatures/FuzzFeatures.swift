// libFuzzer target: feature files as pca opens them, .npy layouts and raw .f32 (FuzzHarness.features).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzFeatures_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.features(bytes(data, size))
        return 0
    }
}
