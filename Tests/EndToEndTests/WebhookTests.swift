import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Postgres
import ServiceLifecycle
import Synchronization
import Testing

/// Notification webhooks, end to end: the four services as processes, and a receiver the test
/// starts on loopback (allowed here by `WEBHOOK_ALLOW_PRIVATE_TARGETS`), which checks every
/// request's signature as a customer's receiver would.
@Suite("Notification webhooks, end to end", .serialized, .timeLimit(.minutes(3)))
struct WebhookTests {
    /// Short timeouts and back-off, so that failures play out in seconds.
    static let environment = [
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true", "WEBHOOK_POLL_INTERVAL_MS": "100", "WEBHOOK_BACKOFF_BASE_MS": "100",
        "WEBHOOK_BACKOFF_MAX_MS": "500", "WEBHOOK_CONNECT_TIMEOUT_MS": "500", "WEBHOOK_TIMEOUT_MS": "2000",
    ]

    @Test func anOrdersNotificationIsDeliveredSignedAndShownAsDelivered() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        try await withSystem(environment: Self.environment) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)
            // Registered by the customer herself; the secret is in this answer only.
            let (status, json) = try await HTTP.put(
                "\(system.url(.notification))/webhooks/alice", json: ["url": receiver.url(for: "alice")], as: .customer("alice"))
            #expect(status == 200)
            let secret = try #require((json as? [String: Any])?["secret"] as? String)
            #expect(secret.hasPrefix("whsec_"))
            receiver.setSecret(secret, for: "alice")
            let (_, shown) = try await HTTP.get("\(system.url(.notification))/webhooks/alice", as: .customer("alice"))
            #expect((shown as? [String: Any])?["url"] as? String == receiver.url(for: "alice"))
            #expect((shown as? [String: Any])?["secret"] == nil)
            #expect(try await HTTP.get("\(system.url(.notification))/webhooks/alice", as: .customer("bob")).0 == 404)
            #expect(try await HTTP.put("\(system.url(.notification))/webhooks/alice", json: ["url": "http://evil"], as: .customer("bob")).0 == 404)
            for bad in ["ftp://127.0.0.1/hook", "http://user:pw@127.0.0.1/hook", "not a url"] {
                #expect(try await HTTP.put("\(system.url(.notification))/webhooks/alice", json: ["url": bad]).0 == 422, "\(bad)")
            }

            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
            #expect(order["status"] as? String == "confirmed")
            let orderId = order["orderId"] as! String
            try await shop.eventually { receiver.received.contains { $0.orderId == orderId } }
            let received = receiver.received.filter { $0.orderId == orderId }
            #expect(received.map(\.kind) == ["order_confirmed"])
            #expect(received.allSatisfy { $0.signatureVerified })
            #expect(receiver.unverifiedRequests == 0)

            try await shop.eventually { try await deliveries(system, orderId).first?["state"] as? String == "delivered" }
            let delivery = try #require(try await deliveries(system, orderId).first)
            #expect(delivery["attempts"] as? Int == 1)
            #expect(delivery["host"] as? String == "127.0.0.1")
            #expect(delivery["deliveryId"] as? String == received.first?.deliveryId)

            // Without a token nothing changes; bob can't remove alice's webhook; alice can.
            let webhook = "\(system.url(.notification))/webhooks/alice"
            #expect(try await HTTP.put(webhook, json: ["url": "http://127.0.0.1:1/"], as: .none).0 == 401)
            #expect(try await HTTP.send("DELETE", webhook, body: nil, as: .customer("bob")).0 == 404)
            #expect(try await HTTP.send("POST", webhook, body: nil).0 == 405)
            #expect((try await HTTP.get(webhook).1 as? [String: Any])?["url"] as? String == receiver.url(for: "alice"))
            #expect(try await HTTP.send("DELETE", webhook, body: nil, as: .customer("alice")).0 == 204)
            #expect(try await HTTP.get(webhook).0 == 404)
        }
    }

    @Test func aFailingReceiverOpensTheBreakerLosesNothingAndGetsEverythingWhenItRecovers() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        receiver.setMode(.failing)
        var environment = Self.environment
        environment["WEBHOOK_BREAKER_FAILURES"] = "3"
        environment["WEBHOOK_BREAKER_OPEN_SECONDS"] = "2"
        environment["WEBHOOK_MAX_ATTEMPTS"] = "50"
        try await withSystem(environment: environment) { system in
            let shop = try await Self.mugsAndAlice(system)
            try await register(system, receiver, "alice")
            var orderIds: [String] = []
            for _ in 0..<5 {
                let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
                #expect(order["status"] as? String == "confirmed")
                orderIds.append(order["orderId"] as! String)
            }
            // The breaker opens: deliveries are postponed, and say why.
            try await shop.eventually {
                try await deliveries(system, orderIds).contains { ($0["lastError"] as? String)?.contains("circuit breaker") == true }
            }
            // While it is open the receiver gets a probe every 2 s, not the five deliveries' retries
            // (every 0.5 s at most without a breaker: some thirty requests in these 3 s).
            let before = receiver.requests
            try await Task.sleep(for: .seconds(3))
            #expect(receiver.requests - before <= 4)
            #expect(try await deliveries(system, orderIds).allSatisfy { $0["state"] as? String == "pending" })

            receiver.setMode(.ok)
            try await shop.eventually(within: .seconds(20)) {
                try await deliveries(system, orderIds).allSatisfy { $0["state"] as? String == "delivered" }
            }
            let received = receiver.received
            #expect(Set(received.map(\.orderId)) == Set(orderIds))
            #expect(received.allSatisfy { $0.signatureVerified })
            #expect(receiver.unverifiedRequests == 0)
        }
    }

    @Test func aReceiverThatNeverAnswersTimesOutAndTheSagaGoesOn() async throws {
        // Accepts connections (the kernel does, into the backlog) and never reads or answers.
        let blackHole = try BlackHole()
        defer { blackHole.close() }
        var environment = Self.environment
        environment["WEBHOOK_TIMEOUT_MS"] = "300"
        environment["WEBHOOK_MAX_ATTEMPTS"] = "2"
        environment["WEBHOOK_BREAKER_FAILURES"] = "100"
        try await withSystem(environment: environment) { system in
            let shop = try await Self.mugsAndAlice(system)
            let (status, _) = try await HTTP.put(
                "\(system.url(.notification))/webhooks/alice", json: ["url": "http://127.0.0.1:\(blackHole.port)/hook"])
            #expect(status == 200)
            var orderIds: [String] = []
            for _ in 0..<3 {
                let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
                #expect(order["status"] as? String == "confirmed")
                orderIds.append(order["orderId"] as! String)
            }
            // Each was recorded at once, whatever the webhook does.
            for id in orderIds { try await shop.eventually { try await shop.notifications(["orderId": id]) == ["order_confirmed"] } }
            try await shop.eventually(within: .seconds(20)) {
                try await deliveries(system, orderIds).allSatisfy { $0["state"] as? String == "failed" }
            }
            for delivery in try await deliveries(system, orderIds) {
                #expect(delivery["attempts"] as? Int == 2)
                #expect((delivery["lastError"] as? String)?.contains("no answer") == true, "\(delivery)")
            }
            // The consumer was never stuck: a later order goes through as fast as ever.
            let later = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
            #expect(later["status"] as? String == "confirmed")
        }
    }

    @Test func aSlowReceiverDoesNotHoldUpTwoHundredOrders() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        receiver.setMode(.slow(.seconds(2)))
        var environment = Self.environment
        environment["WEBHOOK_TIMEOUT_MS"] = "10000"
        environment["WEBHOOK_CONCURRENCY"] = "4"
        try await withSystem(environment: environment) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 100, stock: 1000)
            try await shop.account("alice", balance: 1_000_000)
            try await register(system, receiver, "alice")
            let orders = 200
            let orderSchema = system.schema(.order), notificationSchema = system.schema(.notification)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for batch in 0..<8 {
                    group.addTask {
                        for _ in stride(from: batch, to: orders, by: 8) {
                            let (status, _) = try await shop.place("alice", ["MUG-01": 1])
                            guard status == 202 else { throw SystemError("POST /orders answered \(status)") }
                        }
                    }
                }
                try await group.waitForAll()
            }
            // Every order reaches its end and every notification is recorded, generously soon,
            // while the receiver (four at a time, two seconds each) is far behind.
            try await shop.eventually(within: .seconds(60)) {
                try await count(system, "SELECT count(*) FROM \(orderSchema).orders WHERE status = 'confirmed'") == orders
            }
            try await shop.eventually(within: .seconds(30)) {
                try await count(system, "SELECT count(*) FROM \(notificationSchema).notifications") == orders
            }
            let delivered = try await count(
                system, "SELECT count(*) FROM \(notificationSchema).webhook_deliveries WHERE state = 'delivered'")
            let pending = try await count(
                system, "SELECT count(*) FROM \(notificationSchema).webhook_deliveries WHERE state = 'pending'")
            #expect(delivered + pending == orders)
            #expect(pending > 0, "the receiver kept up, so this test showed nothing")
            try await shop.eventually { receiver.received.count >= 4 }
            #expect(receiver.received.allSatisfy { $0.signatureVerified })
        }
    }

    @Test func aReceiverThatHoldsRequestsTakesOnlyItsShareOfTheSlots() async throws {
        let (slow, fast) = (try await WebhookReceiver.start(), try await WebhookReceiver.start())
        defer {
            slow.stop()
            fast.stop()
        }
        slow.setMode(.holding)
        var environment = Self.environment
        environment["WEBHOOK_CONCURRENCY"] = "4"
        environment["WEBHOOK_HOST_CONCURRENCY"] = "2"
        environment["WEBHOOK_TIMEOUT_MS"] = "30000"
        try await withSystem(environment: environment) { system in
            let shop = try await Self.mugsAndAlice(system)
            try await shop.account("bob", balance: 100_000)
            try await register(system, slow, "alice")
            // Another host for the worker (its limits are per host), the same receiver process.
            let (status, json) = try await HTTP.put(
                "\(system.url(.notification))/webhooks/bob", json: ["url": "http://localhost:\(fast.port)/hooks/bob"])
            #expect(status == 200)
            fast.setSecret(try #require((json as? [String: Any])?["secret"] as? String), for: "bob")

            var aliceOrders: [String] = []
            for _ in 0..<6 {
                aliceOrders.append(try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)["orderId"] as! String)
            }
            try await shop.eventually { slow.heldRequests == 2 }
            let bobOrder = try await shop.waitUntilSettled(try await shop.place("bob", ["MUG-01": 1]).1["orderId"] as! String)
            let bobId = bobOrder["orderId"] as! String
            // Four slots, two taken by alice's receiver, which holds them well past this wait.
            try await shop.eventually(within: .seconds(10)) { try await deliveries(system, bobId).first?["state"] as? String == "delivered" }
            #expect(fast.received.map(\.orderId) == [bobId])
            #expect(slow.heldRequests == 2)
            #expect(try await deliveries(system, aliceOrders).allSatisfy { $0["state"] as? String == "pending" })

            slow.setMode(.ok)
            try await shop.eventually(within: .seconds(20)) {
                try await deliveries(system, aliceOrders).allSatisfy { $0["state"] as? String == "delivered" }
            }
            #expect(Set(slow.received.map(\.orderId)) == Set(aliceOrders))
        }
    }

    @Test func theServiceStopsPromptlyWhileAReceiverHoldsItsRequests() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        receiver.setMode(.holding)
        var environment = Self.environment
        environment["WEBHOOK_TIMEOUT_MS"] = "60000"
        try await withSystem(environment: environment) { system in
            let shop = try await Self.mugsAndAlice(system)
            try await register(system, receiver, "alice")
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
            try await shop.eventually { receiver.heldRequests == 1 }
            // The request in flight is cancelled, not waited for; its row stays pending (leased),
            // for the next instance to send.
            let (status, took) = await system.terminate(.notification)
            #expect(status == 0, "the notification service exited with \(status)")
            #expect(took < .seconds(5), "shutdown took \(took)")
            #expect(system.log(of: .notification).contains("notification service stopped"))
            let state = try await system.pool.query(
                "SELECT state FROM \(system.schema(.notification)).webhook_deliveries d JOIN \(system.schema(.notification)).notifications n USING (notification_id) WHERE n.order_id = $1",
                UUID(uuidString: order["orderId"] as! String)!
            ).first?.decode(String.self, column: "state")
            #expect(state == "pending")
        }
    }

    @Test func twoInstancesShareTheDeliveriesAndSendEachOnce() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        receiver.setMode(.slow(.milliseconds(200)))
        try await withSystem(environment: Self.environment) { system in
            try await system.start([.notification], instance: 2)
            let shop = try await Self.mugsAndAlice(system)
            try await register(system, receiver, "alice")
            var orderIds: [String] = []
            for _ in 0..<20 { orderIds.append(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String) }
            let schema = system.schema(.notification)
            try await shop.eventually(within: .seconds(30)) {
                try await system.pool.query("SELECT count(*) FROM \(schema).webhook_deliveries WHERE state = 'delivered'").first!
                    .decode(Int.self, at: 0) == 20
            }
            let received = receiver.received
            #expect(Set(received.map(\.orderId)) == Set(orderIds))
            #expect(received.count == 20, "each delivery sent once: \(received.count) requests")
        }
    }

    @Test func inProductionModeAWebhookCannotReachInsideTheNetwork() async throws {
        let receiver = try await WebhookReceiver.start()
        defer { receiver.stop() }
        // No WEBHOOK_ALLOW_PRIVATE_TARGETS: the production default.
        var environment = Self.environment
        environment["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = nil
        try await withSystem(environment: environment) { system in
            let shop = try await Self.mugsAndAlice(system)
            let webhook = "\(system.url(.notification))/webhooks/alice"
            for url in [
                receiver.url(for: "alice"), "http://localhost:\(receiver.port)/", "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
            ] {
                let (status, json) = try await HTTP.put(webhook, json: ["url": url])
                #expect(status == 422, "\(url)")
                #expect(((json as? [String: Any])?["detail"] as? String)?.hasPrefix("url:") == true)
            }
            #expect(try await HTTP.get(webhook).0 == 404)

            // A name passes registration, but what it resolves to is checked at every delivery:
            // this machine's own name resolves to loopback (Debian) or a private address (a
            // container), as a name an attacker re-pointed after registering would.
            var name = [CChar](repeating: 0, count: 256)
            gethostname(&name, name.count)
            let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).lowercased()
            let (status, _) = try await HTTP.put(webhook, json: ["url": "http://\(host):\(receiver.port)/hooks/alice"])
            #expect(status == 200)
            let order = try await shop.waitUntilSettled(try await shop.place("alice", ["MUG-01": 1]).1["orderId"] as! String)
            let orderId = order["orderId"] as! String
            try await shop.eventually { try await deliveries(system, orderId).first?["state"] as? String == "failed" }
            let delivery = try #require(try await deliveries(system, orderId).first)
            #expect(delivery["attempts"] as? Int == 1)
            #expect((delivery["lastError"] as? String)?.contains("resolves to") == true, "\(delivery)")
            #expect(receiver.requests == 0)
        }
    }

    // MARK: Helpers

    /// The shop most cases need: a product in stock and a customer who can pay for plenty of it.
    private static func mugsAndAlice(_ system: RunningSystem) async throws -> Shop {
        let shop = Shop(system)
        try await shop.product("MUG-01", price: 100, stock: 100)
        try await shop.account("alice", balance: 100_000)
        return shop
    }

    private func register(_ system: RunningSystem, _ receiver: WebhookReceiver, _ customer: String) async throws {
        let (status, json) = try await HTTP.put(
            "\(system.url(.notification))/webhooks/\(customer)", json: ["url": receiver.url(for: customer)])
        guard status == 200, let secret = (json as? [String: Any])?["secret"] as? String else {
            throw SystemError("PUT /webhooks/\(customer) answered \(status)")
        }
        receiver.setSecret(secret, for: customer)
    }

    private func deliveries(_ system: RunningSystem, _ orderId: String) async throws -> [[String: Any]] {
        try await deliveries(system, [orderId])
    }

    /// The webhook deliveries of the orders' notifications, as `GET /notifications` shows them.
    private func deliveries(_ system: RunningSystem, _ orderIds: [String]) async throws -> [[String: Any]] {
        var all: [[String: Any]] = []
        for id in orderIds {
            let (_, json) = try await HTTP.get("\(system.url(.notification))/notifications?orderId=\(id)")
            let notifications = json as? [[String: Any]] ?? []
            if notifications.isEmpty { all.append(["state": "no notification yet"]) }
            for notification in notifications { all += notification["deliveries"] as? [[String: Any]] ?? [] }
        }
        return all
    }

    private func count(_ system: RunningSystem, _ sql: String) async throws -> Int {
        try await system.pool.query(sql).first!.decode(Int.self, at: 0)
    }
}

/// A customer's webhook receiver, in this process: takes `POST /hooks/{customer}`, checks the
/// `Bazaar-Signature` with that customer's secret the way the README tells receivers to, and
/// answers as its mode says.
final class WebhookReceiver: Sendable {
    enum Mode: Sendable {
        case ok
        case failing
        case slow(Duration)
        /// Holds every request until the mode changes (a minute at most).
        case holding
    }

    struct Delivery: Sendable {
        var deliveryId: String
        var orderId: String
        var kind: String
        var signatureVerified: Bool
    }

    private struct State {
        var mode = Mode.ok
        var secrets: [String: String] = [:]
        var received: [Delivery] = []
        var requests = 0
        var unverified = 0
        var held = 0
    }

    let port: Int
    private let state = Mutex(State())
    private let group = Mutex<ServiceGroup?>(nil)

    private init(port: Int) {
        self.port = port
    }

    static func start() async throws -> WebhookReceiver {
        let receiver = WebhookReceiver(port: try RunningSystem.freePort())
        let router = Router()
        router.post("/hooks/{customer}") { request, context -> Response in
            try await receiver.handle(request, customer: context.parameters.get("customer") ?? "")
        }
        var logger = Logger(label: "webhook-receiver")
        logger.logLevel = .warning
        let (running, signal) = AsyncStream<Void>.makeStream()
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: receiver.port)),
            onServerRunning: { _ in signal.yield() }, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [application], logger: logger))
        receiver.group.withLock { $0 = group }
        Task { try await group.run() }
        for await _ in running { break }
        return receiver
    }

    func url(for customer: String) -> String { "http://127.0.0.1:\(port)/hooks/\(customer)" }
    func setSecret(_ secret: String, for customer: String) { state.withLock { $0.secrets[customer] = secret } }
    func setMode(_ mode: Mode) { state.withLock { $0.mode = mode } }
    /// Deliveries answered 2xx, in the order they came.
    var received: [Delivery] { state.withLock { $0.received } }
    /// Requests of any outcome.
    var requests: Int { state.withLock { $0.requests } }
    var unverifiedRequests: Int { state.withLock { $0.unverified } }
    /// Requests held right now (`.holding`).
    var heldRequests: Int { state.withLock { $0.held } }

    /// Shuts the server down gracefully: requests in flight finish first.
    func stop() {
        guard let group = group.withLock({ $0 }) else { return }
        Task { await group.triggerGracefulShutdown() }
    }

    private func handle(_ request: Request, customer: String) async throws -> Response {
        let body = Data(try await request.body.collect(upTo: 1 << 20).readableBytesView)
        let (mode, secret) = state.withLock { state -> (Mode, String?) in
            state.requests += 1
            return (state.mode, state.secrets[customer])
        }
        let verified = secret.map {
            Self.verify(request.headers[HTTPField.Name("Bazaar-Signature")!] ?? "", body: body, secret: $0)
        } ?? false
        switch mode {
        case .failing: return Response(status: .internalServerError)
        case .slow(let delay): try await Task.sleep(for: delay)
        case .holding:
            state.withLock { $0.held += 1 }
            // A minute at most, so a test that fails while holding can't leave it holding forever.
            for _ in 0..<1200 {
                guard case .holding = state.withLock({ $0.mode }) else { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            state.withLock { $0.held -= 1 }
        case .ok: break
        }
        let payload = try JSONSerialization.jsonObject(with: body) as? [String: Any] ?? [:]
        let delivery = Delivery(
            deliveryId: request.headers[HTTPField.Name("Bazaar-Delivery-Id")!] ?? "", orderId: payload["orderId"] as? String ?? "",
            kind: payload["kind"] as? String ?? "", signatureVerified: verified)
        state.withLock {
            $0.received.append(delivery)
            if !verified { $0.unverified += 1 }
        }
        return Response(status: verified ? .noContent : .badRequest)
    }

    /// What the README tells a receiver to do: HMAC-SHA256 of `"<t>.<raw body>"` with the secret,
    /// compared with `v1` in constant time, and a timestamp no more than five minutes off.
    static func verify(_ header: String, body: Data, secret: String) -> Bool {
        var fields: [String: String] = [:]
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard let timestampText = fields["t"], let timestamp = Int(timestampText), let hex = fields["v1"],
            abs(Int(Date().timeIntervalSince1970) - timestamp) <= 300
        else { return false }
        let mac = stride(from: 0, to: hex.count, by: 2).compactMap {
            UInt8(hex.dropFirst($0).prefix(2), radix: 16)
        }
        return HMAC<SHA256>.isValidAuthenticationCode(
            mac, authenticating: Data("\(timestamp).".utf8) + body, using: SymmetricKey(data: Data(secret.utf8)))
    }
}

/// A TCP port that accepts connections and never answers: the kernel completes the handshakes
/// into the listen backlog, and nobody ever reads.
final class BlackHole: Sendable {
    let port: Int
    private let fd: Int32

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = fd
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 128) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw SystemError("could not listen on a free port") }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(fd)
    }
}
