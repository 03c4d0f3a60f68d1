import Foundation
import Testing

@Suite("Graceful shutdown", .serialized, .timeLimit(.minutes(2)))
struct ShutdownTests {
    /// SIGTERM while orders are coming in: requests already taken are answered, their events
    /// are published before the process exits (well within its deadline), and the saga finishes
    /// every one of them once the service is back.
    @Test func onSIGTERMTheOrderServiceFinishesItsRequestsAndPublishesItsOutboxBeforeExiting() async throws {
        try await withSystem(environment: ["SHUTDOWN_TIMEOUT_SECONDS": "5"]) { system in
            let shop = Shop(system)
            try await shop.product("MUG-01", price: 1250, stock: 1000)
            try await shop.account("alice", balance: 1_000_000)
            // The order service knows the product once its catalogue copy has it: one order first.
            try await shop.eventually { try await shop.place("alice", ["MUG-01": 1]).0 == 202 }

            // Orders in flight when the signal arrives: each either answered 202 or refused (the
            // server stopped listening), never left half done.
            let placing = Task {
                await withTaskGroup(of: String?.self) { group in
                    for _ in 0..<40 {
                        group.addTask {
                            guard let (status, body) = try? await shop.place("alice", ["MUG-01": 1]), status == 202 else { return nil }
                            return body["orderId"] as? String
                        }
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                    return await group.reduce(into: [String]()) { ids, id in if let id { ids.append(id) } }
                }
            }
            try await Task.sleep(for: .milliseconds(150))
            let (status, took) = await system.terminate(.order)
            let accepted = await placing.value

            #expect(status == 0, "the order service exited with \(status)")
            #expect(took < .seconds(5), "shutdown took \(took)")
            #expect(system.log(of: .order).contains("order service stopped"))
            #expect(!accepted.isEmpty)
            let unpublished = try await system.unpublishedEvents(of: .order)
            #expect(unpublished == 0, "events left unpublished at exit")

            try await system.start([.order])
            for id in accepted {
                let order = try await shop.waitUntilSettled(id)
                #expect(order["status"] as? String == "confirmed")
            }
        }
    }
}
