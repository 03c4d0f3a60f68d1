import Foundation
import Testing

@testable import Postgres

@Suite("Value codecs, identifiers and checksums (no I/O)")
struct ValueCodingTests {
    @Test(arguments: [
        ("2026-11-23 20:36:01.123456+00", 1_795_466_161.123456),
        ("2026-11-23 20:36:01+00", 1_795_466_161.0),
        ("2026-11-23 22:36:01.5+02", 1_795_466_161.5),
        ("2026-11-23 15:06:01.000001-05:30", 1_795_466_161.000001),
        ("2026-11-23 20:36:01.123456", 1_795_466_161.123456),  // timestamp without time zone: UTC
        ("2026-11-23T20:36:01.123456Z", 1_795_466_161.123456),  // what we send
        ("2026-11-23", 1_795_392_000.0),  // date
        ("1969-12-31 23:59:59.999999+00", -0.000001),
    ])
    func parsesPostgresTimestamps(text: String, seconds: Double) throws {
        let date = try #require(PostgresTimestamp.parse(text))
        #expect(abs(date.timeIntervalSince1970 - seconds) < 0.000_000_5)
    }

    @Test(arguments: ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "2026-13-01", "2026-11-23 20:36", ""])
    func refusesWhatIsNotADate(text: String) {
        #expect(PostgresTimestamp.parse(text) == nil)
    }

    @Test func formatsUTCWithMicroseconds() {
        #expect(
            PostgresTimestamp.format(Date(timeIntervalSince1970: 1_795_466_161.123456))
                == "2026-11-23T20:36:01.123456Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: -0.000001)) == "1969-12-31T23:59:59.999999Z")
        #expect(PostgresTimestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
    }

    @Test func decodesByteaHexBoolAndUUIDInAnyCase() throws {
        #expect([UInt8](postgresText: "\\x00ff10Ab") == [0x00, 0xff, 0x10, 0xab])
        #expect([UInt8](postgresText: "\\x") == [])
        #expect([UInt8](postgresText: "00ff") == nil)
        #expect([UInt8](postgresText: "\\x0") == nil)
        #expect(Bool(postgresText: "t") == true)
        #expect(Bool(postgresText: "f") == false)
        #expect(Bool(postgresText: "yes") == nil)
        let uuid = UUID()
        #expect(UUID(postgresText: uuid.uuidString.lowercased()) == uuid)
        #expect(UUID(postgresText: uuid.uuidString) == uuid)
    }

    @Test func nilBindsANullOfTheWrappedType() {
        let missing: Int? = nil
        #expect(missing.postgresBinding == PostgresBinding(.null, type: .int8))
        #expect(UUID?.none.postgresBinding.type == .uuid)
        #expect(Data([0, 1]).postgresBinding == PostgresBinding(.binary([0, 1]), type: .bytea))
    }

    @Test func rowErrorsNameTheColumn() throws {
        let row = PostgresRow(
            columns: PostgresColumns(names: ["qty", "note"], types: [.int4, .text]), values: [nil, "many"])
        #expect(try row.decode(Int?.self, column: "qty") == nil)
        let null = #expect(throws: PostgresDecodingError.self) { try row.decode(Int.self, column: "qty") }
        #expect(null?.column == "qty")
        #expect(null?.description.contains("NULL") == true)
        let wrongType = #expect(throws: PostgresDecodingError.self) { try row.decode(Int.self, at: 1) }
        #expect(wrongType?.description == "column #1 (note): cannot read text value 'many' as Int")
        #expect(throws: PostgresDecodingError.self) { try row.decode(String.self, column: "missing") }
    }

    @Test func quotesIdentifiers() throws {
        #expect(try PostgresIdentifier.quoted("orders") == "\"orders\"")
        #expect(try PostgresIdentifier.quoted("Order \"Events\"") == "\"Order \"\"Events\"\"\"")
        #expect(throws: PostgresError.self) { try PostgresIdentifier.quoted("") }
        #expect(throws: PostgresError.self) { try PostgresIdentifier.quoted(String(repeating: "x", count: 64)) }
    }

    @Test func checksumIsFNV1a64() {
        // Reference values of the FNV-1a 64-bit test suite.
        #expect(FNV1a64.hex(of: []) == "cbf29ce484222325")
        #expect(FNV1a64.hex(of: Array("a".utf8)) == "af63dc4c8601ec8c")
        #expect(Migration(version: 1, name: "x", sql: "foobar").checksum == "85944171f73967e8")
    }

    @Test func migrationFileNames() throws {
        #expect(try Migrations.parse(fileName: "0001_create_orders.sql") == (1, "create_orders"))
        #expect(try Migrations.parse(fileName: "20261123_add_index.sql") == (20_261_123, "add_index"))
        let badNames = [
            "create_orders.sql", "0001-create.sql", "0001_.sql", "0000_zero.sql", "00a1_x.sql", "0001_with space.sql",
            "99999999999_too_big.sql",
        ]
        for bad in badNames {
            #expect(throws: MigrationError.badFileName(bad)) { try Migrations.parse(fileName: bad) }
        }
    }
}
