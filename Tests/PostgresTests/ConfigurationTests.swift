import Foundation
import Testing

@testable import Postgres

@Suite("Configuration from URLs (no I/O)")
struct ConfigurationTests {
    @Test func parsesEveryPartAndPercentDecodes() throws {
        let configuration = try PostgresConfiguration(
            url: "postgres://order%20svc:p%40ss%3Aw%2Frd@db.example:6543/bazaar%2Ddev"
                + "?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem&connect_timeout=5&application_name=order-service")
        #expect(configuration.host == "db.example")
        #expect(configuration.port == 6543)
        #expect(configuration.user == "order svc")
        #expect(configuration.password == "p@ss:w/rd")
        #expect(configuration.database == "bazaar-dev")
        #expect(configuration.applicationName == "order-service")
        #expect(
            configuration.parameters == [
                "sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem", "connect_timeout": "5",
            ])
    }

    @Test func defaultsMatchLibpq() throws {
        let configuration = try PostgresConfiguration(url: "postgresql://localhost", applicationName: "inventory")
        #expect(configuration.port == 5432)
        #expect(configuration.user == "postgres")
        #expect(configuration.password == nil)
        #expect(configuration.database == nil)
        #expect(configuration.applicationName == "inventory")
        #expect(configuration.parameters.isEmpty)
    }

    @Test func queryParametersCanNameAUnixSocketAndIPv6() throws {
        let socket = try PostgresConfiguration(url: "postgres:///bazaar?host=/var/run/postgresql&user=app")
        #expect(socket.host == "/var/run/postgresql")
        #expect(socket.user == "app")
        #expect(socket.database == "bazaar")
        let ipv6 = try PostgresConfiguration(url: "postgres://app@[::1]:5433/bazaar")
        #expect(ipv6.host == "::1")
        #expect(ipv6.port == 5433)
    }

    @Test func descriptionNeverShowsThePassword() throws {
        let configuration = try PostgresConfiguration(url: "postgres://app:s3cret@db:5432/bazaar?sslmode=require")
        #expect(configuration.description == "postgres://app@db:5432/bazaar?sslmode=require")
        #expect(!"\(configuration)".contains("s3cret"))
    }

    @Test func rejectsOtherSchemesAndBadPorts() {
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "mysql://app@db/bazaar") }
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "postgres://db/bazaar?port=99999") }
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "not a url") }
    }

    @Test func sessionIsUTCAndKeepsTheCallersOptions() throws {
        let configuration = try PostgresConfiguration(
            url: "postgres://app@db/bazaar?options=-c%20statement_timeout%3D5s")
        let parameters = Dictionary(
            configuration.libpqParameters.map { ($0.keyword, $0.value) }, uniquingKeysWith: { $1 })
        #expect(
            parameters["options"]
                == "-c TimeZone=UTC -c DateStyle=ISO,MDY -c bytea_output=hex -c statement_timeout=5s")
        #expect(parameters["client_encoding"] == "UTF8")
        #expect(parameters["application_name"] == "bazaar")
        #expect(parameters["dbname"] == "bazaar")
    }
}
