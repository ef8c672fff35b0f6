// libFuzzer target: CLIP configs and tokenizers (FuzzHarness.clip).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzCLIP_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.clip(bytes(data, size))
        return 0
    }
}
