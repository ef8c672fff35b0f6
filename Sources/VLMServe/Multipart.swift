// multipart/form-data request bodies for POST /embed_image (curl -F file=@a.jpg), parsed with
// MultipartKit.

import Foundation
import HTTPTypes
import MultipartKit
import NIOCore
import NIOHTTPTypes

// MARK: - Multipart uploads

/// A multipart/form-data body: its file parts in order (every part with a filename, or a
/// non-text content type), and its plain fields.
struct MultipartForm {
    struct File { var name: String; var data: Data }
    var files: [File] = []
    var fields: [String: String] = [:]

    static func parse(_ body: ByteBuffer, contentType: String) throws -> MultipartForm {
        guard let boundary = Self.boundary(contentType) else {
            throw APIError.validation("a multipart/form-data body needs a boundary in its Content-Type", .badRequest)
        }
        let parser = MultipartParser(boundary: boundary)
        var form = MultipartForm()
        var headers: [(String, String)] = []
        var data = Data()
        var open = false
        parser.onHeader = { name, value in open = true; headers.append((name.lowercased(), value)) }
        parser.onBody = { buffer in open = true; data.append(contentsOf: buffer.readableBytesView) }
        parser.onPartComplete = {
            let disposition = headers.first { $0.0 == "content-disposition" }?.1 ?? ""
            let type = headers.first { $0.0 == "content-type" }?.1.lowercased() ?? ""
            let name = Self.parameter("name", in: disposition) ?? ""
            if let filename = Self.parameter("filename", in: disposition) {
                form.files.append(File(name: filename.isEmpty ? name : filename, data: data))
            } else if !type.isEmpty && !type.hasPrefix("text/") {
                form.files.append(File(name: name, data: data))
            } else {
                form.fields[name] = String(decoding: data, as: UTF8.self)
            }
            (headers, data, open) = ([], Data(), false)
        }
        do { try parser.execute(body) } catch {
            throw APIError.validation("the multipart body is malformed: \(error)", .badRequest)
        }
        if open { throw APIError.validation("the multipart body ends inside a part (no closing boundary)", .badRequest) }
        if form.files.isEmpty && form.fields.isEmpty {
            throw APIError.validation("the multipart body holds no part (does its boundary match the Content-Type's?)", .badRequest)
        }
        return form
    }

    static func boundary(_ contentType: String) -> String? {
        guard let b = parameter("boundary", in: contentType), !b.isEmpty, b.utf8.count <= 200 else { return nil }
        return b
    }

    /// `key=value` or `key="value"` in a header's parameters.
    static func parameter(_ key: String, in header: String) -> String? {
        for part in header.split(separator: ";").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == key else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.count >= 2 && v.hasPrefix("\"") && v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }
}

// MARK: - Expect: 100-continue

/// Answers `Expect: 100-continue` at once, so clients that ask before sending a large body
/// (curl does above 1 MB) send it without waiting out their timeout. Limits are still judged
/// on the body as it arrives.
final class ContinueHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), head.headerFields[.expect]?.lowercased() == "100-continue" {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        context.fireChannelRead(data)
    }
}
