import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What one attempt to deliver a webhook came to.
enum AttemptOutcome: Sendable, Equatable {
    /// 2xx: the receiver has it.
    case delivered(status: Int)
    /// Any other answer from a host that is up (4xx but 408 and 429): this delivery failed, the
    /// host did not.
    case rejected(status: Int)
    /// The host is in trouble (5xx, 408, 429, timeout, refused connection): counts towards its breaker.
    case hostFailed(status: Int?, error: String)
    /// Not sent, and never will be: the host resolves to an address we must not call.
    case refused(String)

    /// The receiver's HTTP status, if it answered.
    var status: Int? {
        switch self {
        case .delivered(let status), .rejected(let status): status
        case .hostFailed(let status, _): status
        case .refused: nil
        }
    }
}

/// The body a receiver gets: the notification, and the delivery's id (the same on every attempt,
/// so a receiver can drop a repeat: delivery is at least once).
struct WebhookPayload: Codable, Sendable {
    var deliveryId: String
    var notificationId: String
    var orderId: String
    var customerId: String
    var kind: String
    var createdAt: Date
}

/// Sends one delivery: resolves the host and checks its addresses (SSRF), signs the body, and
/// POSTs it with the configured timeouts, following no redirect (a redirect could point anywhere,
/// past the address checks).
struct WebhookSender: Sendable {
    let client: HTTPClient
    let settings: NotificationSettings

    static func makeClient(_ settings: NotificationSettings) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .nanoseconds(Int64(settings.connectTimeout / .nanoseconds(1))),
                           read: .nanoseconds(Int64(settings.totalTimeout / .nanoseconds(1)))))
        // Each instance's connections to one receiver are bounded by the concurrency anyway.
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func send(_ delivery: ClaimedDelivery, logger: Logger) async -> AttemptOutcome {
        if !settings.allowPrivateTargets {
            // Checked again at every delivery: the name may point elsewhere since registration.
            // (Not resolving is no verdict on the host's addresses: DNS may be down for a while.)
            guard let addresses = await Self.resolve(delivery.host, within: settings.connectTimeout), !addresses.isEmpty else {
                return .hostFailed(status: nil, error: "could not resolve \(delivery.host) within \(settings.connectTimeout)")
            }
            if let refusal = WebhookTarget.refusal(of: addresses, allowPrivateTargets: false) { return .refused(refusal) }
        }
        let payload = WebhookPayload(
            deliveryId: delivery.deliveryId.uuidString.lowercased(),
            notificationId: delivery.notification.notificationId.uuidString.lowercased(),
            orderId: delivery.notification.orderId.uuidString.lowercased(), customerId: delivery.notification.customerId,
            kind: delivery.notification.kind.rawValue, createdAt: delivery.notification.createdAt)
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = .sortedKeys
        guard let body = try? encoder.encode(payload) else { return .refused("the payload could not be encoded") }
        let signature = WebhookSignature(body: body, secret: delivery.secret, timestamp: Int(Date().timeIntervalSince1970))

        var request = HTTPClientRequest(url: delivery.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "bazaar-webhooks/1")
        request.headers.add(name: "Bazaar-Delivery-Id", value: payload.deliveryId)
        request.headers.add(name: "Bazaar-Event", value: payload.kind)
        request.headers.add(name: WebhookSignature.headerName, value: signature.headerValue)
        request.body = .bytes(ByteBuffer(bytes: body))
        let timeout = TimeAmount.nanoseconds(Int64(settings.totalTimeout / .nanoseconds(1)))
        do {
            let response = try await client.execute(request, timeout: timeout, logger: logger)
            // Read (a little of) the answer so the connection can be reused; what it says is not ours.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let status = Int(response.status.code)
            switch status {
            case 200..<300: return .delivered(status: status)
            case 408, 429, 500...: return .hostFailed(status: status, error: "the receiver answered \(status)")
            default: return .rejected(status: status)
            }
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            return .hostFailed(status: nil, error: "no answer within \(settings.totalTimeout)")
        } catch let error as HTTPClientError where error == .connectTimeout {
            return .hostFailed(status: nil, error: "no connection within \(settings.connectTimeout)")
        } catch {
            return .hostFailed(status: nil, error: "\(error)")
        }
    }

    /// The host's addresses (an address literal is its own), or nil if it could not be resolved
    /// within `timeout`. The system resolver runs on a thread of its own, since `getaddrinfo`
    /// blocks; one that hangs keeps only that thread (until `getaddrinfo` gives up), not the caller.
    static func resolve(_ host: String, within timeout: Duration) async -> [IPAddress]? {
        if let literal = IPAddress(host) { return [literal] }
        let addresses = try? await answer(within: timeout) {
            await withCheckedContinuation { continuation in
                Thread.detachNewThread { continuation.resume(returning: lookUp(host)) }
            }
        }
        return addresses ?? nil
    }

    private static func lookUp(_ host: String) -> [IPAddress]? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0 else { return nil }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let current = entry {
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if current.pointee.ai_family == AF_INET {
                current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    var address = $0.pointee.sin_addr
                    inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
                }
            } else if current.pointee.ai_family == AF_INET6 {
                current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    var address = $0.pointee.sin6_addr
                    inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
                }
            }
            let printed = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let address = IPAddress(printed) { addresses.append(address) }
            entry = current.pointee.ai_next
        }
        return addresses
    }
}
