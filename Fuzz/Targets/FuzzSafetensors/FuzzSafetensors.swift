// libFuzzer target: the safetensors reader (FuzzHarness.safetensors).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzSafetensors_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.safetensors(bytes(data, size))
        return 0
    }
}
