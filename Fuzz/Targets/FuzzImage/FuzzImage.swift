// libFuzzer target: the JPEG/PNG decoder and preprocessing (FuzzHarness.image).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzImage_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.image(bytes(data, size))
        return 0
    }
}
