// libFuzzer target: a sharded checkpoint's index over two shards (FuzzHarness.shards).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzShards_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.shards(bytes(data, size))
        return 0
    }
}
