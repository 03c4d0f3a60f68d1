import Hummingbird

/// Refuses request bodies over `limit` bytes with 413, before any route reads them: a declared
/// `Content-Length` is refused at once, a chunked body once it grows past the limit.
public struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    public let limit: Int

    public init(limit: Int) {
        self.limit = limit
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let tooLarge = Problem(.contentTooLarge, "the request body is larger than \(limit) bytes")
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit { throw tooLarge }
        var request = request
        do {
            _ = try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge
        }
        return try await next(request, context)
    }
}

extension Router {
    /// Answers 405 Method Not Allowed, with an `Allow` header, for the methods `path` doesn't
    /// serve: the path exists, so "not found" would be wrong. (HEAD comes with GET.)
    public func refuseOtherMethods(on path: RouterPath, allowing allowed: [HTTPRequest.Method]) {
        let allow = (allowed.contains(.get) ? allowed + [.head] : allowed).map(\.rawValue).joined(separator: ", ")
        let others: [HTTPRequest.Method] = [.get, .head, .post, .put, .delete, .patch, .options, .trace, HTTPRequest.Method("QUERY")!]
        for method in others where !allowed.contains(method) && !(method == .head && allowed.contains(.get)) {
            on(path, method: method) { _, _ -> Response in
                throw Problem(.methodNotAllowed, "\(path) allows \(allow)", headers: [.allow: allow])
            }
        }
    }
}
