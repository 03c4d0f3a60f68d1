import Contracts
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The services' HTTP APIs, with errors that say what to do when a service is not there.
struct ServiceClient: Sendable {
    let environment: BazaarEnvironment
    let session: URLSession

    init(environment: BazaarEnvironment) {
        self.environment = environment
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
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        do {
            let (data, response) = try await session.data(for: request)
            return Response(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: data)
        } catch let error as URLError where error.code == .timedOut {
            throw CLIError("\(service) service at \(base) did not answer \(method) \(path) within 10 s (overloaded?)")
        } catch let error as URLError where [.cannotConnectToHost, .cannotFindHost, .networkConnectionLost].contains(error.code) {
            throw CLIError(
                "\(service) service not reachable at \(base) — is the stack running? try `bazaar stack up` (or `make run`)")
        } catch {
            throw CLIError("\(method) \(base + path) failed: \(error)")
        }
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
