// The digest cache: a file hashed once per version, and entries that are links or FIFOs neither
// followed nor waited on.

import Foundation
import XCTest
import VLMIO

final class DigestCacheTests: XCTestCase {
    func testEntriesAreNeverFollowedOrWaitedOn() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-digests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/weights.bin", victim = dir + "/victim.txt", cache = dir + "/cache/sha256"
        try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: file))
        try "keep me\n".write(toFile: victim, atomically: true, encoding: .utf8)
        let want = try SHA256.hexDigest(ofFile: file)
        DigestCache.forgetInMemory()
        XCTAssertEqual(try DigestCache.sha256(ofFile: file, cache: cache), want)
        XCTAssertEqual(DigestCache.computed, 1)
        let entries = try FileManager.default.contentsOfDirectory(atPath: cache)
        XCTAssertEqual(entries.count, 1)
        let entry = cache + "/" + entries[0]
        // Read from the cache by the next process (memory forgotten): not hashed again.
        DigestCache.forgetInMemory()
        XCTAssertEqual(try DigestCache.sha256(ofFile: file, cache: cache), want)
        XCTAssertEqual(DigestCache.computed, 0)
        // A link in the entry's place: not read through, and replaced rather than written through.
        try FileManager.default.removeItem(atPath: entry)
        try FileManager.default.createSymbolicLink(atPath: entry, withDestinationPath: victim)
        DigestCache.forgetInMemory()
        XCTAssertEqual(try DigestCache.sha256(ofFile: file, cache: cache), want)
        XCTAssertEqual(DigestCache.computed, 1)
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "keep me\n")
        XCTAssertEqual(FileStatus.of(entry, followLinks: false)?.kind, .regular)
        // A FIFO in its place: not waited on.
        try FileManager.default.removeItem(atPath: entry)
        XCTAssertEqual(mkfifo(entry, 0o644), 0)
        DigestCache.forgetInMemory()
        XCTAssertEqual(try DigestCache.sha256(ofFile: file, cache: cache), want)
        XCTAssertEqual(DigestCache.computed, 1)
        // A relative VLM_CACHE_DIR names no cache.
        XCTAssertNil(DigestCache.folder(environment: ["VLM_CACHE_DIR": "cache"]))
        XCTAssertEqual(DigestCache.folder(environment: ["VLM_CACHE_DIR": "/c"]), "/c/sha256")
    }
}
