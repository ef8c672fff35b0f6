// multipart/form-data request bodies for POST /embed_image (curl -F file=@a.jpg), parsed with
// MultipartKit.

import Foundation
import HTTPTypes
import MultipartKit
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import VLMIO

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
            } else if (!type.isEmpty && !type.hasPrefix("text/")) || Self.fileFieldNames.contains(name.lowercased()) {
                // curl -F 'files=<cat.jpg' sends the bytes with no filename: a part under a
                // file field's name is a file all the same.
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

    /// Part names that always hold an image.
    static let fileFieldNames: Set<String> = ["files", "file", "image", "images"]

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
    /// A request the HTTP layer refused (unparseable, bad Content-Length, headers or URL over
    /// the limits): NIO answered it 400 and closes the connection; this counts it.
    let rejected: @Sendable () -> Void
    /// --idle-timeout and --read-timeout, for the connection's clock (`ConnectionClock`).
    let idleTimeout: Double, readTimeout: Double
    let headersTimedOut: @Sendable () -> Void

    init(maxBodyBytes: Int, hasRoom: @escaping @Sendable () -> Bool, rejected: @escaping @Sendable () -> Void = {},
         idleTimeout: Double = 60, readTimeout: Double = 60, headersTimedOut: @escaping @Sendable () -> Void = {}) {
        self.maxBodyBytes = maxBodyBytes
        self.hasRoom = hasRoom
        self.rejected = rejected
        (self.idleTimeout, self.readTimeout, self.headersTimedOut) = (idleTimeout, readTimeout, headersTimedOut)
    }

    /// This connection's clock; and whether a refusal was counted (NIO may report one bad
    /// request twice, and a request whose headers timed out was counted as a 408 already).
    private var clock: ConnectionClock?
    private var counted = false
    private var inRequest = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A parse error inside a request whose head was read (its body cut short) belongs to a
        // request the server answers itself (408, 400): only one that never became a request counts.
        if error is HTTPParserError && !counted && !inRequest && !(clock?.answeredTimeout ?? false) {
            counted = true
            rejected()
        }
        context.fireErrorCaught(error)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) {
            let clock = ConnectionClock(idle: idleTimeout, read: readTimeout, headersTimedOut: headersTimedOut)
            self.clock = clock
            try? pipeline.addHandler(clock, position: .first)
            try? pipeline.addHandler(ConnectionRules(clock: clock), position: .before(codec))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: inRequest = true
        case .end: inRequest = false
        default: break
        }
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
    let clock: ConnectionClock?

    init(clock: ConnectionClock? = nil) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { clock?.requestEnded() }
        guard case .head(var head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        clock?.headDecoded()
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
            clock?.responseEnded()
            closeAfterAnswer = false
            let channel: Channel = context.channel
            let written: EventLoopFuture<Void> = context.writeAndFlush(data)
            written.whenComplete { (_: Result<Void, Error>) -> Void in channel.close(promise: nil) }
            if let promise { written.cascade(to: promise) }
        case .end:
            clock?.responseEnded()
            context.write(data, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }
}

/// A connection's time limits, in place of Hummingbird's idle timeout (which also closes a
/// connection in the middle of a request, with no answer): between requests, --idle-timeout;
/// from a request's first byte to the end of its headers, --read-timeout, then a 408 and the
/// connection closed (headers dribbled a byte at a time hold nothing longer); while a body is
/// read, the handler's own --read-timeout answers 408; while a request is answered, none.
/// First in the pipeline, it sees every byte that arrives; ConnectionRules tells it where the
/// requests and answers begin and end.
final class ConnectionClock: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let idle: TimeAmount, read: TimeAmount
    let headersTimedOut: @Sendable () -> Void
    private var context: ChannelHandlerContext?
    private var task: Scheduled<Void>?
    /// Requests whose head was read and whose answer has not ended.
    private var inFlight = 0
    /// When the first byte of a request whose head is not complete arrived.
    private var headersSince: NIODeadline?
    private var readingBody = false
    private var lastActive = NIODeadline.now()
    /// A 408 was written for headers that did not arrive.
    private(set) var answeredTimeout = false

    init(idle: Double, read: Double, headersTimedOut: @escaping @Sendable () -> Void) {
        self.idle = .nanoseconds(Int64(idle * 1e9))
        self.read = .nanoseconds(Int64(read * 1e9))
        self.headersTimedOut = headersTimedOut
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        reschedule()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActive = .now()
        if headersSince == nil && !readingBody {
            headersSince = lastActive
            reschedule()
        }
        context.fireChannelRead(data)
    }

    func headDecoded() {
        headersSince = nil
        readingBody = true
        inFlight += 1
        reschedule()
    }

    func requestEnded() {
        readingBody = false
        lastActive = .now()
        reschedule()
    }

    func responseEnded() {
        inFlight = max(0, inFlight - 1)
        lastActive = .now()
        reschedule()
    }

    private func reschedule() {
        task?.cancel()
        task = nil
        guard let context else { return }
        let deadline: NIODeadline
        if let since = headersSince, inFlight == 0 {
            deadline = since + read
        } else if readingBody || inFlight > 0 {
            return   // the request's own limits (--read-timeout, --request-timeout) apply
        } else {
            deadline = lastActive + idle
        }
        task = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.fire() }
    }

    private func fire() {
        task = nil
        guard let context, context.channel.isActive else { return }
        if headersSince != nil && inFlight == 0 {
            let seconds = Double(read.nanoseconds) / 1e9
            let body = "{\"error\":\(jsonString(String(format: "the request headers did not arrive within %g s (--read-timeout)", seconds))),\"error_type\":\"Validation\"}\n"
            let text = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            headersTimedOut()
            answeredTimeout = true
            let channel = context.channel
            context.writeAndFlush(NIOAny(ByteBuffer(string: text))).whenComplete { _ in channel.close(promise: nil) }
        } else if !readingBody && inFlight == 0 {
            context.close(promise: nil)
        }
    }
}
