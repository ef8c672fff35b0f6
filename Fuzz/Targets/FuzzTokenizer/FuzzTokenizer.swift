// libFuzzer target: tokenizer loading (vocab.txt, tokenizer.json, tokenizer_config.json) and WordPiece (FuzzHarness.tokenizer).
import FuzzHarness
import FuzzSupport

@_cdecl("FuzzTokenizer_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { data, size in
        FuzzHarness.tokenizer(bytes(data, size))
        return 0
    }
}
