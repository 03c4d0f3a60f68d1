import Auth
import Hummingbird

/// Who calls, from a request's bearer token (`Authorization: Bearer <JWT>`, see `TokenAuthority`).
///
/// Routes ask for what they need: `caller(of:)` for anyone with a valid token, `requireAdmin`
/// for back-office changes. Ownership checks stay in the routes, which know what a resource
/// belongs to; they answer 404 rather than 403 for another customer's resource, so ids don't
/// leak.
public struct Authenticator: Sendable {
    let authority: TokenAuthority

    public init(authority: TokenAuthority) {
        self.authority = authority
    }

    /// The verified caller; 401 without a token, or with one that is invalid or expired.
    public func caller(of request: Request) async throws -> Caller {
        guard let header = request.headers[.authorization] else {
            throw Problem.unauthorized("this endpoint needs a bearer token: Authorization: Bearer <token>")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Problem.unauthorized("the Authorization header must be: Bearer <token>")
        }
        do {
            return try await authority.verify(String(parts[1]))
        } catch {
            throw Problem.unauthorized("the bearer token is not valid here, or it has expired")
        }
    }

    /// Admin only: 401 without a valid token, 403 with a customer's.
    public func requireAdmin(_ request: Request) async throws {
        guard try await caller(of: request) == .admin else {
            throw Problem(.forbidden, "this endpoint needs an admin token")
        }
    }
}

extension Caller {
    /// Whether this caller may see or change what belongs to `customerId`.
    public func mayAccess(customer customerId: String) -> Bool {
        switch self {
        case .admin: true
        case .customer(let id): id == customerId
        }
    }
}
