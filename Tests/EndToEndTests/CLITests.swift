import AMQP
import Foundation
import Postgres
import TestSupport
import Testing

/// The `bazaar` command-line tool against a running system, as a user runs it.
@Suite("The bazaar command-line tool", .serialized, .timeLimit(.minutes(3)))
struct CLITests {
    @Test func placeFollowsAnOrderToItsEndAndShowTellsItsWholeSaga() async throws {
        try await withSystem { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 10)
            try await shop.account("alice", balance: 10_000)

            let placed = try bazaar(system, ["order", "place", "--customer", "alice", "--item", "MUG-01:2"])
            #expect(placed.status == 0, "\(placed.output)")
            for step in ["OrderPlaced", "StockReserved", "PaymentCaptured", "OrderConfirmed", "confirmed · total 25.00"] {
                #expect(placed.output.contains(step), "no \(step) in:\n\(placed.output)")
            }
            let id = try #require(placed.output.firstMatch(of: /placed order ([0-9a-f-]{36})/)?.1)

            // Cancel it: the timeline then shows the compensations too.
            #expect(try await HTTP.post("\(system.url(.order))/orders/\(id)/cancel", json: nil).0 == 202)
            try await shop.eventually { try await shop.payments(["orderId": String(id)]) == ["refunded:2500"] }
            try await shop.eventually { try await shop.stock("MUG-01") == Stock(available: 10, reserved: 0) }
            let shown = try bazaar(system, ["order", "show", String(id)])
            #expect(shown.status == 0, "\(shown.output)")
            #expect(shown.output.contains("cancelled (customer_cancelled)"))
            for event in ["OrderCancelled", "StockReleased", "PaymentRefunded", "NotificationSent"] {
                #expect(shown.output.contains(event), "no \(event) in:\n\(shown.output)")
            }
            #expect(shown.output.contains("payment +"), "deliveries are listed:\n\(shown.output)")

            let json = try bazaar(system, ["order", "show", String(id), "--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
            let events = try #require((object["timeline"] as? [String: Any])?["events"] as? [[String: Any]])
            #expect(Set(events.compactMap { $0["type"] as? String }).isSuperset(of: ["OrderPlaced", "OrderCancelled", "PaymentRefunded"]))
        }
    }

    @Test func aDeadLetterThatFailedOnceIsReplayedAndNowSucceeds() async throws {
        try await withSystem { system in
            // A PaymentDeclined for an order the order service doesn't know (yet): it parks it.
            let orderId = UUID()
            let event = """
                {"eventId":"\(UUID())","type":"PaymentDeclined","version":1,"occurredAt":"2026-11-23T20:36:01.123Z",\
                "correlationId":"\(orderId)","source":"payment",\
                "data":{"orderId":"\(orderId)","customerId":"dave","amount":500,"reason":"insufficient_funds"}}
                """
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            try await connection.publish(
                OutgoingMessage(
                    exchange: "payments", routingKey: "payment.declined.v1", body: Array(event.utf8),
                    properties: AMQPProperties(messageId: "replay-me", type: "PaymentDeclined", userId: connection.user)))
            try await Shop(system).eventually { try await connection.queueStatus("order.dlq").messages == 1 }
            await connection.close()

            let listed = try bazaar(system, ["dlq", "list"])
            #expect(listed.output.contains("order.dlq  replay-me  PaymentDeclined  rejected_by_handler: no order \(orderId.uuidString.lowercased())"), "\(listed.output)")
            let shown = try bazaar(system, ["dlq", "show", "replay-me"])
            #expect(shown.output.contains("was sent to:  payments with payment.declined.v1"), "\(shown.output)")

            // The order turns up (here, written directly), and the replay now succeeds.
            try await system.pool.execute(
                "INSERT INTO \(system.schema(.order)).orders (order_id, customer_id, status, total, deadline_at) VALUES ($1, 'dave', 'pending', 500, now() + interval '1 hour')",
                orderId)
            let replayed = try bazaar(system, ["dlq", "replay", "replay-me"])
            #expect(replayed.status == 0, "\(replayed.output)")
            #expect(replayed.output.contains("replayed replay-me (PaymentDeclined) to payments with payment.declined.v1"))
            let order = try await Shop(system).waitUntilSettled(orderId.uuidString.lowercased())
            #expect(order["status"] as? String == "cancelled")
            #expect(order["reason"] as? String == "payment_declined")
            #expect(try bazaar(system, ["dlq", "list"]).output.contains("no dead letters"))
        }
    }

    /// Parking headers on a message the consumer didn't park are a publisher's claim: a replay
    /// must not turn them into a route or a publisher.
    @Test func replayIgnoresParkingHeadersTheConsumerDidNotWrite() async throws {
        try await withSystem(start: [.order]) { system in
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            // Straight into the dead-letter queue, dressed up as a parked PaymentCaptured, by a
            // user that is not the order service's.
            try await connection.publish(
                OutgoingMessage(
                    exchange: "", routingKey: "order.dlq", body: Array(#"{"forged":true}"#.utf8),
                    properties: AMQPProperties(
                        headers: [
                            "x-bazaar-original-exchange": "payments", "x-bazaar-original-routing-key": "payment.captured.v1",
                            "x-bazaar-original-user-id": "payment", "x-bazaar-reason": "retries_exhausted",
                        ], messageId: "forged-1", type: "PaymentCaptured", userId: "intruder-\(UUID().uuidString.prefix(4))")))
            await connection.close()
            let replayed = try bazaar(
                system, ["dlq", "replay", "forged-1", "--queue", "order.dlq"],
                environment: ["AMQP_PUBLISHER_USERS": "order=order"])
            #expect(replayed.status != 0)
            #expect(replayed.output.contains("skipped forged-1: its original exchange and routing key are unknown"), "\(replayed.output)")
        }
    }

    @Test func purgePrintsWhatItDrops() async throws {
        try await withSystem { system in
            let connection = try await AMQPConnection.connect(try AMQPConfiguration(url: system.vhost.amqpURL), logger: .init(label: "e2e"))
            try await connection.publish(
                OutgoingMessage(exchange: "orders", routingKey: "order.placed.v1", body: Array("not json".utf8),
                                properties: AMQPProperties(messageId: "poison-1")))
            try await Shop(system).eventually { try await connection.queueStatus("inventory.dlq").messages == 1 }
            await connection.close()
            let purged = try bazaar(system, ["dlq", "purge", "--queue", "inventory.dlq"])
            #expect(purged.output.contains("dropping inventory.dlq  poison-1"), "\(purged.output)")
            #expect(purged.output.contains("dropped 1 dead letter(s)"))
            #expect(try bazaar(system, ["dlq", "list", "--queue", "inventory.dlq"]).output.contains("no dead letters"))
        }
    }

    @Test func aShortLoadRunReportsEveryOrderAndItsPercentiles() async throws {
        try await withSystem { system in
            let run = try bazaar(
                system, ["load", "--rate", "20", "--duration", "2s", "--customers", "5",
                         "--mix", "happy=50,out-of-stock=25,declined=25", "--json"])
            #expect(run.status == 0, "\(run.output)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
            #expect(report["placed"] as? Int == 40)
            #expect(report["settled"] as? Int == 40)
            #expect(report["failed"] as? Int == 0)
            let outcomes = try #require(report["outcomes"] as? [String: Int])
            #expect(outcomes == ["confirmed": 20, "cancelled/out_of_stock": 10, "cancelled/payment_declined": 10])
            let latency = try #require(report["placedToSettledMs"] as? [String: Double])
            #expect(latency["p50"]! > 0 && latency["p50"]! <= latency["p99"]! && latency["p99"]! <= latency["max"]!)
        }
    }

    @Test func statusShowsHealthQueuesAndBacklog() async throws {
        try await withSystem { system in
            let status = try bazaar(system, ["stack", "status", "--json"])
            let report = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any])
            #expect(report["services"] as? [String: String] == ["order": "ready", "inventory": "ready", "payment": "ready", "notification": "ready"])
            #expect((report["queues"] as? [String: Int])?["payment.dlq"] == 0)
            #expect((report["unpublishedEvents"] as? [String: Int])?.count == 4)
        }
    }

    @Test func anUnreachableServiceIsNamedWithWhatToDo() throws {
        let result = try bazaar(
            nil, ["order", "place", "--customer", "alice", "--item", "MUG-01:1"],
            environment: ["ORDER_URL": "http://127.0.0.1:\(try RunningSystem.freePort())"])
        #expect(result.status != 0)
        #expect(result.output.contains("order service not reachable at http://127.0.0.1:"))
        #expect(result.output.contains("bazaar stack up"))
    }

    @Test func badArgumentsAreRefusedWithUsage() throws {
        let result = try bazaar(nil, ["order", "place", "--customer", "alice", "--item", "MUG-01"])
        #expect(result.status == 64)
        #expect(result.output.contains("expected SKU:QUANTITY"))
    }
}
