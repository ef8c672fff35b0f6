// libFuzzer target: text, JSON-lines and pair input parsing (FuzzHarness.jsonl).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzJSONLines_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.jsonl(bytes(data, size))
        return 0
    }
}
