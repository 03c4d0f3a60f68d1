import Foundation
import JWTKit

/// Who calls an API, as a verified bearer token says.
public enum Caller: Sendable, Equatable, CustomStringConvertible {
    /// A customer: sees and changes only what is theirs.
    case customer(String)
    /// Back office: product and account changes, and every customer's orders.
    case admin

    public var description: String {
        switch self {
        case .customer(let id): "customer \(id)"
        case .admin: "admin"
        }
    }
}

/// Issues and verifies the bearer tokens of Bazaar's HTTP APIs: JWTs signed with HMAC-SHA256
/// and a secret the services share (`AUTH_JWT_SECRET`). A token names its subject (a customer id,
/// or `admin`), its role and when it expires; anything else in it is ignored.
///
/// A shared secret keeps the reference small; a system with an identity provider would verify
/// its RS256/ES256 tokens against the provider's published keys instead (jwt-kit does both).
public struct TokenAuthority: Sendable {
    /// HMAC-SHA256 wants a key at least as long as its output.
    public static let minimumSecretBytes = 32

    private let keys: JWTKeyCollection

    public init(secret: String) async throws(TokenError) {
        guard secret.utf8.count >= Self.minimumSecretBytes else {
            throw .weakSecret("the secret must be at least \(Self.minimumSecretBytes) bytes")
        }
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    }

    /// A signed token for `caller`, valid for `lifetime`.
    public func issue(for caller: Caller, lifetime: Duration = .seconds(3600)) async throws -> String {
        let now = Date()
        let claims: Claims
        switch caller {
        case .customer(let id):
            claims = Claims(subject: id, role: .customer, issuedAt: now, lifetime: lifetime)
        case .admin:
            claims = Claims(subject: "admin", role: .admin, issuedAt: now, lifetime: lifetime)
        }
        return try await keys.sign(claims)
    }

    /// The caller a token speaks for, if its signature is ours and it has not expired.
    public func verify(_ token: String) async throws(TokenError) -> Caller {
        let claims: Claims
        do {
            claims = try await keys.verify(token, as: Claims.self)
        } catch {
            throw .invalid("\(error)")
        }
        switch claims.role {
        case .customer: return .customer(claims.sub.value)
        case .admin: return .admin
        }
    }
}

public enum TokenError: Error, Equatable, CustomStringConvertible {
    case weakSecret(String)
    /// Not a token, not signed with our secret, or expired.
    case invalid(String)

    public var description: String {
        switch self {
        case .weakSecret(let reason): "unusable token secret: \(reason)"
        case .invalid(let reason): "invalid token: \(reason)"
        }
    }
}

/// The claims of a Bazaar token.
struct Claims: JWTPayload {
    enum Role: String, Codable { case customer, admin }

    var sub: SubjectClaim
    var role: Role
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    init(subject: String, role: Role, issuedAt: Date, lifetime: Duration) {
        sub = SubjectClaim(value: subject)
        self.role = role
        iat = IssuedAtClaim(value: issuedAt)
        exp = ExpirationClaim(value: issuedAt.addingTimeInterval(Double(lifetime.components.seconds)))
    }

    func verify(using _: some JWTAlgorithm) throws {
        try exp.verifyNotExpired()
        guard !sub.value.isEmpty else { throw JWTError.claimVerificationFailure(failedClaim: sub, reason: "empty subject") }
    }
}
