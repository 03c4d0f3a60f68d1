import Foundation
import Postgres
import Testing

@Suite("Binding and decoding against the real database")
struct RoundTripTests {
    struct Document: Codable, Equatable {
        var sku: String
        var quantity: Int
        var placedAt: Date
    }

    @Test func everyTypeRoundTripsIncludingNulls() async throws {
        try await TestDatabase.withConnection { connection in
            // A temporary table belongs to this session only: no name can clash with another test.
            try await connection.execute(
                """
                CREATE TEMP TABLE everything (
                    label text PRIMARY KEY, small int4, big int8, flag bool, id uuid, at timestamptz,
                    blob bytea, bytes bytea, doc jsonb
                )
                """)
            let id = UUID()
            let at = Date(timeIntervalSince1970: 1_795_466_161.123456)
            let blob = Data([0x00, 0x01, 0x00, 0xff, 0x00])
            let document = Document(sku: "A-1", quantity: 3, placedAt: Date(timeIntervalSince1970: 1_795_466_161))
            let label = "Zoë's \"café\" — 東京 🚀 \\ tab\t"
            let inserted = try await connection.execute(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                label, Int32(-42), Int64.max, true, id, at, blob, [UInt8]([0, 0, 7]),
                try PostgresJSON(encoding: document))
            #expect(inserted == 1)
            try await connection.execute(
                "INSERT INTO everything VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                "nulls", Int32?.none, Int?.none, Bool?.none, UUID?.none, Date?.none, Data?.none,
                [UInt8]?.none, PostgresJSON?.none)

            let row = try #require(try await connection.query("SELECT * FROM everything WHERE label = $1", label).first)
            #expect(try row.decode(String.self, column: "label") == label)
            #expect(try row.decode(Int32.self, column: "small") == -42)
            #expect(try row.decode(Int.self, column: "small") == -42)
            #expect(try row.decode(Int64.self, column: "big") == Int64.max)
            #expect(try row.decode(Bool.self, column: "flag") == true)
            #expect(try row.decode(UUID.self, column: "id") == id)
            let decodedAt = try row.decode(Date.self, column: "at")
            #expect(abs(decodedAt.timeIntervalSince(at)) < 0.000_000_5)
            #expect(try row.decode(Data.self, column: "blob") == blob)
            #expect(try row.decode([UInt8].self, column: "bytes") == [0, 0, 7])
            #expect(try row.decodeJSON(Document.self, column: "doc") == document)
            #expect(try row.decode(PostgresJSON.self, column: "doc").text.contains("\"sku\": \"A-1\""))
            // By position, too.
            #expect(try row.decode(String.self, at: 0) == label)

            let nulls = try #require(try await connection.query("SELECT * FROM everything WHERE label = 'nulls'").first)
            #expect(try nulls.decode(Int32?.self, column: "small") == nil)
            #expect(try nulls.decode(Int?.self, column: "big") == nil)
            #expect(try nulls.decode(Bool?.self, column: "flag") == nil)
            #expect(try nulls.decode(UUID?.self, column: "id") == nil)
            #expect(try nulls.decode(Date?.self, column: "at") == nil)
            #expect(try nulls.decode(Data?.self, column: "blob") == nil)
            #expect(try nulls.decode(PostgresJSON?.self, column: "doc") == nil)
            let error = #expect(throws: PostgresDecodingError.self) { try nulls.decode(Date.self, column: "at") }
            #expect(error?.column == "at")
        }
    }

    @Test func timestampsKeepMicrosecondsAndUUIDsCompareAsValues() async throws {
        try await TestDatabase.withConnection { connection in
            let at = Date(timeIntervalSince1970: 1_795_466_161.000001)
            let text = try await connection.query("SELECT $1::text AS t", at).first?.decode(String.self, column: "t")
            #expect(text == "2026-11-23 20:36:01.000001+00")

            // Foundation prints UUIDs upper-case, Postgres lower-case: they are still one value.
            let id = UUID()
            let rows = try await connection.query(
                "SELECT $1::uuid = $2 AS same, $2::text AS printed", id.uuidString, id)
            let row = try #require(rows.first)
            #expect(try row.decode(Bool.self, column: "same"))
            #expect(try row.decode(String.self, column: "printed") == id.uuidString.lowercased())
            #expect(try row.decode(UUID.self, column: "printed") == id)
        }
    }

    @Test func declaredTypesHoldForArithmeticNullsAndEmptyBytes() async throws {
        try await TestDatabase.withConnection { connection in
            // Declared int8, so arithmetic past 2^31 is fine and nothing is guessed from text.
            let sum = try await connection.query("SELECT $1 + 1 AS sum", 4_000_000_000)
                .first?.decode(Int.self, column: "sum")
            #expect(sum == 4_000_000_001)
            let isNull = try await connection.query("SELECT $1 IS NULL AS missing", Int?.none).first
            // An empty bytea is a value, not NULL.
            let empty = try await connection.query("SELECT $1 AS b, $1 IS NULL AS missing", Data()).first
            #expect(try empty?.decode(Data.self, column: "b") == Data())
            #expect(try empty?.decode(Bool.self, column: "missing") == false)
            #expect(try isNull?.decode(Bool.self, column: "missing") == true)
        }
    }

    @Test func aStringWithNULIsRefusedNotTruncated() async throws {
        try await TestDatabase.withConnection { connection in
            let error = await #expect(throws: PostgresError.self) {
                try await connection.query("SELECT $1::text", "before\u{0}after")
            }
            #expect(error?.kind == .invalidParameter)
        }
    }
}
