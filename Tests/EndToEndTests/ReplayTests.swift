import AMQP
import Foundation
import Postgres
import Synchronization
import TestSupport
import Testing

/// `bazaar replay`: the order service's catalogue copy rebuilt from a snapshot while orders keep
/// coming, and published events sent again to a queue that joined late.
@Suite("Replay: rebuild a read model, onboard a late consumer", .serialized, .timeLimit(.minutes(3)))
struct ReplayTests {
    @Test func theCatalogueCopyIsRebuiltUnderLoadAndNoOrderForAKnownSkuFails() async throws {
        try await withSystem(start: [.order, .inventory]) { system in
            let shop = Shop(system)
            let catalogue = "\(system.schema(.order)).catalogue"
            let skus = (1...40).map { "SKU-\($0)" }
            for (offset, sku) in skus.enumerated() {
                let (status, _) = try await HTTP.put(
                    "\(system.url(.inventory))/products/\(sku)", json: ["name": sku, "price": 100 + offset, "stock": 100_000])
                #expect(status == 200)
            }
            try await shop.eventually { try await system.pool.query("SELECT sku FROM \(catalogue)").count == skus.count }

            // Break the copy: a product lost, a price wrong, a product inventory never had.
            try await system.pool.execute("DELETE FROM \(catalogue) WHERE sku = 'SKU-40'")
            try await system.pool.execute("UPDATE \(catalogue) SET price = 1 WHERE sku = 'SKU-2'")
            try await system.pool.execute(
                "INSERT INTO \(catalogue) (sku, name, price, revision, updated_at) VALUES ('GHOST', 'ghost', 5, 1, now() - interval '1 hour')")
            // And a live update newer than any snapshot inventory can send (as if its ProductUpdated
            // arrived while the snapshot travelled): the swap must keep it.
            try await system.pool.execute("UPDATE \(catalogue) SET price = 777, revision = 99 WHERE sku = 'SKU-5'")

            // Orders for skus the copy knows, ten at a time, from before the rebuild until after it.
            // (A flag ends the load, not cancellation: cancelling a task in URLSession.data(for:)
            // can deadlock in swift-corelibs-foundation.)
            let stop = StopFlag()
            let placed = Counter()
            let load = Task {
                try await withThrowingTaskGroup(of: [Int].self) { group in
                    for worker in 0..<10 {
                        group.addTask {
                            var statuses: [Int] = []
                            var round = 0
                            while !stop.isSet {
                                let sku = skus[(worker * 7 + round) % 39]  // never SKU-40, the lost one
                                round += 1
                                statuses.append(try await shop.place("customer-\(worker)", [sku: 1]).0)
                                placed.increment()
                            }
                            return statuses
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0 += $1 }
                }
            }
            try await shop.eventually {
                try await system.pool.query("SELECT 1 FROM \(system.schema(.order)).orders").count >= 30
            }
            let rebuilt = try bazaar(system, ["replay", "catalogue"])
            // Orders keep coming a little after the swap, and until there are 100 of them (how
            // many fit in the rebuild's time depends on how busy the machine is).
            try await Task.sleep(for: .milliseconds(300))
            try await shop.eventually { placed.count >= 100 }
            stop.set()
            let statuses = try await load.value

            #expect(rebuilt.status == 0, "\(rebuilt.output)")
            #expect(rebuilt.output.contains("rebuilt the catalogue: 40 products in"), "\(rebuilt.output)")
            #expect(rebuilt.output.contains("(39 from the snapshot, 1 kept as newer live updates, 1 stale removed)"), "\(rebuilt.output)")
            #expect(statuses.count >= 100, "only \(statuses.count) orders placed")
            #expect(statuses.allSatisfy { $0 == 202 }, "refused: \(statuses.filter { $0 != 202 })")

            // The copy is inventory's catalogue again: the lost product back, the price right, no
            // ghost; and the newer live update kept.
            let rows = try await system.pool.query("SELECT sku, price FROM \(catalogue) ORDER BY sku")
            let copy = Dictionary(uniqueKeysWithValues: try rows.map { (try $0.decode(String.self, column: "sku"), try $0.decode(Int.self, column: "price")) })
            var expected = Dictionary(uniqueKeysWithValues: skus.enumerated().map { ($1, 100 + $0) })
            expected["SKU-5"] = 777
            #expect(copy == expected)
            let staged = try await system.pool.query("SELECT 1 FROM \(system.schema(.order)).catalogue_staging")
            #expect(staged.isEmpty, "the staged snapshot is dropped after the swap")
        }
    }

    @Test func aQueueBoundLateReceivesExactlyTheEventsSinceTInOrderAndNobodyElseDoes() async throws {
        try await withSystem(start: [.order, .inventory]) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 1000)
            let outbox = "\(system.schema(.order)).outbox"
            func allPublished() async throws -> Bool { try await system.unpublishedEvents(of: .order) == 0 }
            for _ in 0..<3 { #expect(try await shop.place("alice", ["MUG-01": 1]).0 == 202) }
            try await shop.eventually(allPublished)
            try await Task.sleep(for: .milliseconds(50))
            let since = Date()
            for _ in 0..<5 { #expect(try await shop.place("bob", ["MUG-01": 1]).0 == 202) }
            try await shop.eventually(allPublished)

            // Two new queues: one binds OrderPlaced and gets the replay; one binds every order
            // event and must get nothing, because a replay never goes through the exchange.
            let late = "late-\(UUID().uuidString.prefix(8).lowercased())", bystander = late + "-bystander"
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            defer { Task { await connection.close() } }
            try await connection.declare(
                Topology(
                    queues: [QueueSpec(name: late), QueueSpec(name: bystander)],
                    bindings: [
                        BindingSpec(queue: late, exchange: "orders", routingKey: "order.placed.v1"),
                        BindingSpec(queue: bystander, exchange: "orders", routingKey: "order.#"),
                    ]))

            let replayed = try bazaar(
                system, [
                    "replay", "events", "--from-service", "order", "--since", since.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)),
                    "--type", "OrderPlaced", "--to-queue", late,
                ])
            #expect(replayed.status == 0, "\(replayed.output)")
            #expect(replayed.output.contains("replayed 5 event(s) of order"), "\(replayed.output)")

            let expected = try await system.pool.query(
                "SELECT event_id FROM \(outbox) WHERE event_type = 'OrderPlaced' AND created_at >= $1 ORDER BY position", since
            ).map { try $0.decode(UUID.self, column: "event_id").uuidString.lowercased() }
            #expect(expected.count == 5)
            try await shop.eventually { try await connection.queueStatus(late).messages == 5 }
            let consumer = try await connection.consume(queue: late, prefetch: 10)
            var received: [AMQPDelivery] = []
            for try await delivery in consumer {
                received.append(delivery)
                try await delivery.ack()
                if received.count == 5 { break }
            }
            #expect(received.map { $0.properties.messageId ?? "" } == expected)
            let admin = try #require(URLComponents(string: system.vhost.amqpURL)?.user)
            for delivery in received {
                #expect(delivery.properties.headers["x-replayed"] == .bool(true))
                #expect(delivery.properties.userId == admin)
                #expect(delivery.properties.type == "OrderPlaced")
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await connection.queueStatus(late).messages == 0, "nothing but the five")
            #expect(try await connection.queueStatus(bystander).messages == 0, "the exchange's consumers see nothing")
        }
    }

    @Test func aConsumerThatMissedEventsAppliesTheReplayOnceHoweverOftenItRuns() async throws {
        // No order may time out (and be cancelled) while the test runs.
        try await withSystem(environment: ["ORDER_PENDING_TIMEOUT_SECONDS": "600"], start: [.order]) { system in
            let shop = Shop(system)
            // Inventory is not running: the order service prices from its copy, seeded here.
            try await system.pool.execute(
                "INSERT INTO \(system.schema(.order)).catalogue (sku, name, price, revision) VALUES ('MUG-01', 'mug', 1250, 1)")
            for _ in 0..<3 { #expect(try await shop.place("alice", ["MUG-01": 2]).0 == 202) }
            try await shop.eventually {
                try await system.pool.query("SELECT 1 FROM \(system.schema(.order)).outbox WHERE published_at IS NOT NULL").count == 3
            }
            // The inventory queue lost what it held (a late binding would never have had it).
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            defer { Task { await connection.close() } }
            #expect(try await connection.purgeQueue("inventory") == 3)

            try await system.start([.inventory])
            let (status, _) = try await HTTP.put("\(system.url(.inventory))/products/MUG-01", json: ["name": "mug", "price": 1250, "stock": 100])
            #expect(status == 200)
            let replay = ["replay", "events", "--from-service", "order", "--since", "5m", "--to-queue", "inventory"]
            let first = try bazaar(system, replay)
            #expect(first.status == 0, "\(first.output)")
            #expect(first.output.contains("replayed 3 event(s) of order"), "\(first.output)")
            // Without --type: what inventory consumes from order.
            #expect(first.output.contains("(CatalogueSnapshotRequested, OrderCancelled, OrderConfirmed, OrderPlaced)"), "\(first.output)")
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 94, reserved: 6) }
            let inventoryOutbox = "\(system.schema(.inventory)).outbox"
            let emitted = try await system.pool.query("SELECT 1 FROM \(inventoryOutbox) WHERE event_type = 'StockReserved'").count
            #expect(emitted == 3)

            let second = try bazaar(system, replay)
            #expect(second.status == 0, "\(second.output)")
            try await shop.eventually { system.log(of: .inventory).components(separatedBy: "duplicate, skipped").count - 1 == 3 }
            #expect(try await shop.stock("MUG-01") == Stock(available: 94, reserved: 6))
            #expect(try await system.pool.query("SELECT 1 FROM \(inventoryOutbox) WHERE event_type = 'StockReserved'").count == 3)
            #expect(try await connection.queueStatus("inventory.dlq").messages == 0, "a replay is trusted like the original")
        }
    }

    /// As deployed: each service its own broker user, the topology and permissions from the
    /// deployment's definitions. The rebuild's events pass the topic permissions, and a replay
    /// carries the producer's `user-id` (the admin impersonates it), so the consumer trusts it.
    @Test func asTheDeploymentsBrokerUsersARebuildAndAReplayPassPermissionsAndProvenanceChecks() async throws {
        let system = try await RunningSystem(environment: ["ORDER_PENDING_TIMEOUT_SECONDS": "600"], serviceUsers: true)
        do {
            try await system.start([.order, .inventory])
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 100)
            let catalogue = "\(system.schema(.order)).catalogue"
            try await system.pool.execute("UPDATE \(catalogue) SET price = 1 WHERE sku = 'MUG-01'")
            let rebuilt = try bazaar(system, ["replay", "catalogue"])
            #expect(rebuilt.status == 0, "\(rebuilt.output)")
            #expect(try await system.pool.query("SELECT 1 FROM \(catalogue) WHERE sku = 'MUG-01' AND price = 1250").count == 1)

            #expect(try await shop.place("alice", ["MUG-01": 2]).0 == 202)
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 98, reserved: 2) }
            // A replay sends rows marked published; a handed event's mark may follow its confirm by
            // up to the relay's `markDelay` (50 ms; see docs/outbox-and-inbox.md).
            try await shop.eventually { try await system.unpublishedEvents(of: .order) == 0 }
            let users = ServiceUsers.services.map { "\($0)=\(ServiceUsers.user($0, in: system.vhost))" }.joined(separator: ",")
            let replayed = try bazaar(
                system, ["replay", "events", "--from-service", "order", "--since", "5m", "--to-queue", "inventory"],
                environment: ["AMQP_PUBLISHER_USERS": users])
            #expect(replayed.status == 0, "\(replayed.output)")
            // The rebuild's request and the order: inventory has both already.
            #expect(replayed.output.contains("replayed 2 event(s) of order"), "\(replayed.output)")
            try await shop.eventually { system.log(of: .inventory).components(separatedBy: "duplicate, skipped").count - 1 == 2 }
            #expect(try await shop.stock("MUG-01") == Stock(available: 98, reserved: 2))
            let admin = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            #expect(try await admin.queueStatus("inventory.dlq").messages == 0)
            #expect(try await admin.queueStatus("order.dlq").messages == 0)
            await admin.close()
        } catch {
            await system.tearDown()
            throw error
        }
        await system.tearDown()
    }
}

/// A one-way switch shared by concurrent tasks.
final class Counter: Sendable {
    private let value = Mutex(0)
    var count: Int { value.withLock { $0 } }
    func increment() { value.withLock { $0 += 1 } }
}

final class StopFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
