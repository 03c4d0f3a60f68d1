import Contracts
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The services' HTTP APIs, with errors that say what to do when a service is not there. The
/// CLI is the operator's tool: it calls as admin.
struct ServiceClient: Sendable {
    let environment: BazaarEnvironment
    let session: URLSession
    private let bearer: BearerCache

    init(environment: BazaarEnvironment) {
        self.environment = environment
        bearer = BearerCache(environment: environment)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 10
        configuration.httpMaximumConnectionsPerHost = 64
        session = URLSession(configuration: configuration)
    }

    struct Response: Sendable {
        var status: Int
        var body: Data

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder.iso8601.decode(type, from: body)
        }

        /// The `detail` of a problem response, or the raw body.
        var problem: String {
            ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any])?["detail"] as? String
                ?? String(decoding: body, as: UTF8.self)
        }
    }

    func send(
        _ method: String, _ service: ServiceName, _ path: String, json: (any Encodable)? = nil, headers: [String: String] = [:]
    ) async throws -> Response {
        let base = environment.url(of: service)
        guard let url = URL(string: base + path) else { throw CLIError("\(base + path) is not a URL") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        if let json {
            request.httpBody = try JSONEncoder().encode(json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        // Without a token the call still goes out: an absent service is the more useful error.
        if let token = try await bearer.token() { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response): (Data, URLResponse)
        do {
            (data, response) = try await session.data(for: request)
        } catch let error as URLError where error.code == .timedOut {
            throw CLIError("\(service) service at \(base) did not answer \(method) \(path) within 10 s (overloaded?)")
        } catch let error as URLError where [.cannotConnectToHost, .cannotFindHost, .networkConnectionLost].contains(error.code) {
            throw CLIError(
                "\(service) service not reachable at \(base) — is the stack running? try `bazaar stack up` (or `make run`)")
        } catch {
            throw CLIError("\(method) \(base + path) failed: \(error)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        if status == 401 {
            throw CLIError(
                "\(service) service refused the call (401): "
                    + (environment.authSecret == nil && environment.adminToken == nil
                        ? "no AUTH_JWT_SECRET or ADMIN_TOKEN to sign in with; `make run` writes both to .run/stack.env"
                        : "its AUTH_JWT_SECRET is not the one in this environment"))
        }
        return Response(status: status, body: data)
    }
}

/// One admin token per run, made on first use.
private actor BearerCache {
    let environment: BazaarEnvironment
    var cached: String?

    init(environment: BazaarEnvironment) {
        self.environment = environment
    }

    /// Nil when the environment has neither a token nor the secret to sign one.
    func token() async throws -> String? {
        if let cached { return cached }
        guard environment.adminToken != nil || environment.authSecret != nil else { return nil }
        let token = try await environment.adminBearer()
        cached = token
        return token
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// An order as the order service returns it.
struct OrderView: Codable, Sendable {
    struct Item: Codable, Sendable {
        var sku: String
        var quantity: Int
        var unitPrice: Int
    }

    var orderId: String
    var customerId: String
    var status: String
    var reason: String?
    var items: [Item]
    var total: Int
    var createdAt: Date
}

/// Cents as a person reads them: 2500 → "25.00".
func money(_ cents: Int) -> String {
    let sign = cents < 0 ? "-" : ""
    let value = abs(cents)
    return "\(sign)\(value / 100).\(String(format: "%02d", value % 100))"
}
