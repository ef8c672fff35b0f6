// libFuzzer target: the .npy header parser (FuzzHarness.npy).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzNPY_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.npy(bytes(data, size))
        return 0
    }
}
