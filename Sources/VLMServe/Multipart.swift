// multipart/form-data request bodies for POST /embed_image (curl -F file=@a.jpg), parsed with
// MultipartKit.

import Foundation
import HTTPTypes
import MultipartKit
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

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

// MARK: - Connection rules

/// Answers `Expect: 100-continue` at once, so clients that ask before sending a large body
/// (curl does above 1 MB) send it without waiting out their timeout — unless its Content-Length
/// is over --max-body-bytes or the queue has no room: that one is answered 413 or 429 without
/// the body. Also puts `ConnectionRules` in front of the HTTP/1 codec.
final class ContinueHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart
    let maxBodyBytes: Int
    let hasRoom: @Sendable () -> Bool

    init(maxBodyBytes: Int, hasRoom: @escaping @Sendable () -> Bool) {
        self.maxBodyBytes = maxBodyBytes
        self.hasRoom = hasRoom
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) {
            try? pipeline.addHandler(ConnectionRules(), position: .before(codec))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), head.headerFields[.expect]?.lowercased() == "100-continue" {
            var tooLarge = false
            if let text = head.headerFields[.contentLength], let length = Int(text) { tooLarge = length > maxBodyBytes }
            if !tooLarge && hasRoom() {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        }
        context.fireChannelRead(data)
    }
}

/// HTTP/1 connection rules Hummingbird leaves out: an HTTP/1.0 request without
/// `Connection: keep-alive` is the connection's last (as HTTP/1.0 says), and an answer that says
/// `Connection: close` (a body left unread: 413, 408, 429 for memory) closes the connection
/// once written.
final class ConnectionRules: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    /// What each request read and not yet answered asked of its connection, in order (requests
    /// may be pipelined: read before the answers to those in front of them are written).
    private struct Asked {
        var last: Bool
        /// HTTP/1.0 asking for keep-alive: the answer must say it keeps the connection.
        var keepAlive10: Bool
    }
    private var asked: [Asked] = []
    private var closeAfterAnswer = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        let last: Bool = !head.isKeepAlive
        let http10: Bool = head.version.major == 1 && head.version.minor == 0
        asked.append(Asked(last: last, keepAlive10: http10 && !last))
        if last && http10 {
            // Hummingbird ends the connection after a request that says close.
            head.headers.replaceOrAdd(name: "connection", value: "close")
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            let request: Asked = asked.isEmpty ? Asked(last: false, keepAlive10: false) : asked.removeFirst()
            closeAfterAnswer = request.last || !head.isKeepAlive
            if closeAfterAnswer {
                head.headers.replaceOrAdd(name: "connection", value: "close")
            } else if request.keepAlive10 {
                head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end where closeAfterAnswer:
            closeAfterAnswer = false
            let channel: Channel = context.channel
            let written: EventLoopFuture<Void> = context.writeAndFlush(data)
            written.whenComplete { (_: Result<Void, Error>) -> Void in channel.close(promise: nil) }
            if let promise { written.cascade(to: promise) }
        default:
            context.write(data, promise: promise)
        }
    }
}
