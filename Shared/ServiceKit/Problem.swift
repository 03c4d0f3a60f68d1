import Foundation
import Hummingbird
import Postgres

/// An HTTP error as RFC 9457 describes it, sent as `application/problem+json`:
/// `{"type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": "unknown sku: X"}`.
///
/// Handlers throw it for bad input; `ProblemMiddleware` turns every other error into one too, so
/// a client always gets the same shape.
public struct Problem: Error, HTTPResponseError, Sendable, Equatable {
    public var status: HTTPResponse.Status
    /// Says what was wrong, for a person.
    public var detail: String
    /// A URI naming the kind of problem; `about:blank` means "see the status".
    public var type: String
    /// Headers the status calls for, such as `WWW-Authenticate` with a 401.
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ detail: String, type: String = "about:blank", headers: HTTPFields = [:]) {
        self.status = status
        self.detail = detail
        self.type = type
        self.headers = headers
    }

    public static func badRequest(_ detail: String) -> Problem { Problem(.badRequest, detail) }
    public static func notFound(_ detail: String) -> Problem { Problem(.notFound, detail) }
    public static func conflict(_ detail: String) -> Problem { Problem(.conflict, detail) }
    public static func unprocessable(_ detail: String) -> Problem { Problem(.unprocessableContent, detail) }
    public static func unauthorized(_ detail: String) -> Problem {
        Problem(.unauthorized, detail, headers: [.wwwAuthenticate: #"Bearer realm="bazaar""#])
    }

    private struct Body: Encodable {
        var type: String
        var title: String
        var status: Int
        var detail: String
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = try JSONEncoder().encode(Body(type: type, title: status.reasonPhrase, status: status.code, detail: detail))
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        return Response(
            status: status, headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns every error a route throws into a problem response: Hummingbird's own (404 for an
/// unknown route, 400 for a body that does not decode) keep their status; anything unexpected
/// is logged and answered 500 without leaking its text.
public struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            return try problem.response(from: request, context: context)
        } catch let error as HTTPError {
            let detail = error.body ?? (error.status == .notFound ? "no such resource: \(request.uri.path)" : error.status.reasonPhrase)
            return try Problem(error.status, detail).response(from: request, context: context)
        } catch let error as PostgresError where error.isServerUnavailable {
            // Nothing was done, and it may pass: 503 tells a client it can try again. (A connection
            // lost mid-request stays a 500: its transaction may have committed, and a blind retry
            // of a POST without an Idempotency-Key could place a second order.)
            context.logger.warning("database unavailable answering \(request.method) \(request.uri.path): \(error)")
            return try Problem(.serviceUnavailable, "the database is unavailable; try again shortly", headers: [.retryAfter: "1"])
                .response(from: request, context: context)
        } catch is DecodingError {
            return try Problem.badRequest("the body is not the JSON this endpoint expects").response(from: request, context: context)
        } catch {
            context.logger.error("unexpected error answering \(request.method) \(request.uri.path): \(error)")
            return try Problem(.internalServerError, "an unexpected error occurred; it has been logged")
                .response(from: request, context: context)
        }
    }
}
