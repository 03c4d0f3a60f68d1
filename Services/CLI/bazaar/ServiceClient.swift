import AsyncHTTPClient
import Contracts
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOPosix

/// The services' HTTP APIs, with errors that say what to do when a service is not there. The
/// CLI is the operator's tool: it calls as admin.
///
/// On AsyncHTTPClient rather than URLSession: `bazaar load` is a benchmark's load generator,
/// sharing the machine with what it measures, and URLSession (libcurl under Dispatch) cost it
/// about four times the CPU per request.
struct ServiceClient: Sendable {
    let environment: BazaarEnvironment
    private let bearer: BearerCache

    /// How long a call may take, from sending to the last byte of the answer.
    static let timeout = TimeAmount.seconds(10)

    /// One client for the process: it lives as long as the process does, so it is never shut
    /// down. Up to 64 connections per service, as many as `bazaar load` has requests in flight.
    private static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2)))
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    init(environment: BazaarEnvironment) {
        self.environment = environment
        bearer = BearerCache(environment: environment)
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
        guard URL(string: base + path) != nil else { throw CLIError("\(base + path) is not a URL") }
        var request = HTTPClientRequest(url: base + path)
        request.method = HTTPMethod(rawValue: method)
        if let json {
            request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(json)))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        // Without a token the call still goes out: an absent service is the more useful error.
        if let token = try await bearer.token() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        let status: Int
        let body: ByteBuffer
        do {
            let response = try await Self.http.execute(request, timeout: Self.timeout)
            status = Int(response.status.code)
            body = try await response.body.collect(upTo: 64 << 20)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw CLIError("\(service) service at \(base) did not answer \(method) \(path) within 10 s (overloaded?)")
        } catch let error as HTTPClientError where error == .connectTimeout {
            throw CLIError(
                "\(service) service not reachable at \(base) — is the stack running? try `bazaar stack up` (or `make run`)")
        } catch let error where Self.isRefused(error) {
            throw CLIError(
                "\(service) service not reachable at \(base) — is the stack running? try `bazaar stack up` (or `make run`)")
        } catch let error as HTTPClientError where error == .remoteConnectionClosed {
            throw CLIError("\(service) service at \(base) closed the connection during \(method) \(path) (did it stop?)")
        } catch {
            throw CLIError("\(method) \(base + path) failed: \(error)")
        }
        if status == 401 {
            throw CLIError(
                "\(service) service refused the call (401): "
                    + (environment.authSecret == nil && environment.adminToken == nil
                        ? "no AUTH_JWT_SECRET or ADMIN_TOKEN to sign in with; `make run` writes both to .run/stack.env"
                        : "its AUTH_JWT_SECRET is not the one in this environment"))
        }
        return Response(status: status, body: Data(buffer: body))
    }

    /// Nothing listens there: refused, on the one address or on each of a name's addresses.
    private static func isRefused(_ error: any Error) -> Bool {
        switch error {
        case let error as IOError: error.errnoCode == ECONNREFUSED
        case let error as NIOConnectionError: error.connectionErrors.contains { isRefused($0.error) }
        default: false
        }
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
