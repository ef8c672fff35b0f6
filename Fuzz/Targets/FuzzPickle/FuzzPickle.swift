// libFuzzer target: the restricted unpickler (FuzzHarness.pickle).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzPickle_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.pickle(bytes(data, size))
        return 0
    }
}
