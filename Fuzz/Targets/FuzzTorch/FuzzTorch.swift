// libFuzzer target: torch checkpoints: the zip reader and the legacy format (FuzzHarness.torch).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzTorch_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.torch(bytes(data, size))
        return 0
    }
}
