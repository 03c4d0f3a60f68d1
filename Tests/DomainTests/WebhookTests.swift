import Foundation
import NotificationService
import Testing

@Suite("Webhook targets: which URLs and addresses a webhook may reach")
struct WebhookTargetTests {
    @Test(arguments: [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "100.127.255.255", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fc00::1", "fd12:3456::1",
        "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe",
    ])
    func nonPublicAddressesAreRefused(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.nonPublicRange != nil)
    }

    @Test(arguments: ["8.8.8.8", "1.1.1.1", "172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1", "2606:4700::1111"])
    func publicAddressesPass(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.nonPublicRange == nil)
    }

    @Test func hostNamesAreNotAddresses() {
        #expect(IPAddress("example.com") == nil)
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("[::1]") == .v6(Array(repeating: 0, count: 15) + [1]))
    }

    @Test func aPublicHTTPSURLIsAccepted() throws {
        let target = try WebhookTarget("https://Hooks.Example.com:8443/bazaar?x=1", allowPrivateTargets: false)
        #expect(target.host == "hooks.example.com")
        #expect(target.url.absoluteString == "https://Hooks.Example.com:8443/bazaar?x=1")
    }

    @Test(arguments: [
        "ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com", "https://user:pw@example.com/",
        "https://user@example.com/", "not a url", "/relative/path", "https:///nohost", "http://localhost:8080/",
        "http://api.localhost/", "http://127.0.0.1/", "http://[::1]:9000/", "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/", "http://[::ffff:192.168.0.1]/", "http://0.0.0.0:80/",
    ])
    func unsafeOrInvalidURLsAreRefused(_ text: String) {
        #expect(throws: WebhookTarget.Refused.self) { try WebhookTarget(text, allowPrivateTargets: false) }
    }

    @Test func loopbackIsAllowedOnlyWhenPrivateTargetsAre() throws {
        let target = try WebhookTarget("http://127.0.0.1:9999/hook", allowPrivateTargets: true)
        #expect(target.host == "127.0.0.1")
        // The scheme and credential checks hold either way.
        #expect(throws: WebhookTarget.Refused.self) { try WebhookTarget("ftp://127.0.0.1/", allowPrivateTargets: true) }
        #expect(throws: WebhookTarget.Refused.self) { try WebhookTarget("http://a:b@127.0.0.1/", allowPrivateTargets: true) }
    }

    @Test func resolvedAddressesMustAllBePublic() {
        let addresses = [IPAddress("93.184.216.34")!, IPAddress("10.0.0.1")!]
        #expect(WebhookTarget.refusal(of: addresses, allowPrivateTargets: false)?.contains("10.0.0.1") == true)
        #expect(WebhookTarget.refusal(of: [IPAddress("93.184.216.34")!], allowPrivateTargets: false) == nil)
        #expect(WebhookTarget.refusal(of: addresses, allowPrivateTargets: true) == nil)
        #expect(WebhookTarget.refusal(of: [], allowPrivateTargets: true) != nil)
    }
}

@Suite("Webhook back-off")
struct DeliveryBackoffTests {
    let backoff = DeliveryBackoff(base: .seconds(1), maximum: .seconds(60), maximumAttempts: 8)

    @Test func theDelayDoublesUpToTheMaximum() {
        #expect((1...8).map { backoff.nominalDelay(afterAttempts: $0) } == [1, 2, 4, 8, 16, 32, 60, 60].map { .seconds($0) })
    }

    @Test func jitterKeepsBetweenHalfAndAllOfTheNominalDelay() {
        #expect(backoff.delay(afterAttempts: 3, random: 0) == .seconds(2))
        #expect(backoff.delay(afterAttempts: 3, random: 1) == .seconds(4))
        #expect(backoff.delay(afterAttempts: 3, random: 0.5) == .seconds(3))
        for _ in 0..<100 {
            let delay = backoff.delay(afterAttempts: 4)!
            #expect(delay >= .seconds(4) && delay <= .seconds(8))
        }
    }

    @Test func afterTheLastAttemptThereIsNoRetry() {
        #expect(backoff.delay(afterAttempts: 7) != nil)
        #expect(backoff.delay(afterAttempts: 8) == nil)
        #expect(DeliveryBackoff(base: .seconds(1), maximum: .seconds(1), maximumAttempts: 1).delay(afterAttempts: 1) == nil)
    }
}

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    let start = ContinuousClock.now

    @Test func itOpensAfterTheThresholdOfConsecutiveFailures() {
        var breaker = CircuitBreaker(failureThreshold: 3, openDuration: .seconds(10))
        for _ in 0..<2 {
            #expect(breaker.decide(at: start) == .proceed)
            breaker.recordFailure(at: start)
        }
        #expect(!breaker.isOpen)
        breaker.recordFailure(at: start)
        #expect(breaker.isOpen)
        #expect(breaker.decide(at: start + .seconds(9)) == .wait(until: start + .seconds(10)))
    }

    @Test func aSuccessResetsTheCount() {
        var breaker = CircuitBreaker(failureThreshold: 3, openDuration: .seconds(10))
        breaker.recordFailure(at: start)
        breaker.recordFailure(at: start)
        breaker.recordSuccess()
        breaker.recordFailure(at: start)
        breaker.recordFailure(at: start)
        #expect(!breaker.isOpen)
    }

    @Test func afterTheOpenPeriodOneProbeGoesAndItsSuccessCloses() {
        var breaker = CircuitBreaker(failureThreshold: 1, openDuration: .seconds(10))
        breaker.recordFailure(at: start)
        let later = start + .seconds(10)
        #expect(breaker.decide(at: later) == .proceed)
        #expect(breaker.state == .halfOpen)
        // Only the one probe: the rest wait for its outcome.
        #expect(breaker.decide(at: later) == .wait(until: later + .seconds(1)))
        breaker.recordSuccess()
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        #expect(breaker.decide(at: later) == .proceed)
    }

    @Test func aFailedProbeOpensItAgain() {
        var breaker = CircuitBreaker(failureThreshold: 2, openDuration: .seconds(5))
        breaker.recordFailure(at: start)
        breaker.recordFailure(at: start)
        #expect(breaker.decide(at: start + .seconds(5)) == .proceed)
        breaker.recordFailure(at: start + .seconds(6))
        #expect(breaker.state == .open(until: start + .seconds(11)))
        // A late failure of a call let through earlier doesn't extend the open period.
        breaker.recordFailure(at: start + .seconds(7))
        #expect(breaker.state == .open(until: start + .seconds(11)))
    }
}

@Suite("Webhook signatures")
struct WebhookSignatureTests {
    let body = Array(#"{"kind":"order_confirmed"}"#.utf8)
    let secret = "whsec_test"

    @Test func aReceiverVerifiesWhatWasSigned() {
        let signature = WebhookSignature(body: body, secret: secret, timestamp: 1_764_000_000)
        #expect(signature.headerValue.hasPrefix("t=1764000000,v1="))
        #expect(signature.headerValue.count == "t=1764000000,v1=".count + 64)
        #expect(WebhookSignature.verify(signature.headerValue, body: body, secret: secret, now: 1_764_000_100))
    }

    @Test func itMatchesHMACSHA256OfTimestampDotBody() {
        // Computed independently: printf '1764000000.{"kind":"order_confirmed"}' | openssl dgst -sha256 -hmac whsec_test
        let signature = WebhookSignature(body: body, secret: secret, timestamp: 1_764_000_000)
        #expect(signature.headerValue == "t=1764000000,v1=\(Self.expectedHex)")
    }
    static let expectedHex = "542a1f418843e79e0bb0e7c617d37034836263d900b5a1513729e1fecfb067fe"

    @Test func aChangedBodyWrongSecretOrOldTimestampFails() {
        let header = WebhookSignature(body: body, secret: secret, timestamp: 1_764_000_000).headerValue
        #expect(!WebhookSignature.verify(header, body: Array(#"{"kind":"order_cancelled"}"#.utf8), secret: secret, now: 1_764_000_000))
        #expect(!WebhookSignature.verify(header, body: body, secret: "whsec_other", now: 1_764_000_000))
        #expect(!WebhookSignature.verify(header, body: body, secret: secret, now: 1_764_000_301))
        #expect(!WebhookSignature.verify("v1=abc", body: body, secret: secret, now: 1_764_000_000))
        #expect(!WebhookSignature.verify("garbage", body: body, secret: secret, now: 1_764_000_000))
    }

    @Test func secretsAreFreshAndLongEnough() {
        let (a, b) = (WebhookSignature.newSecret(), WebhookSignature.newSecret())
        #expect(a != b)
        #expect(a.hasPrefix("whsec_") && a.count == 6 + 64)
    }
}

@Suite("Notification settings")
struct NotificationSettingsTests {
    @Test func defaultsAreSafeForProduction() throws {
        let settings = try NotificationSettings(environment: [:])
        #expect(!settings.allowPrivateTargets)
        #expect(settings.maximumAttempts == 8)
        #expect(settings.totalTimeout == .seconds(10))
        #expect(settings.breakerFailures == 5)
    }

    @Test func valuesAreReadAndCheckedFromTheEnvironment() throws {
        let settings = try NotificationSettings(environment: [
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true", "WEBHOOK_TIMEOUT_MS": "300", "WEBHOOK_BREAKER_OPEN_SECONDS": "2",
        ])
        #expect(settings.allowPrivateTargets)
        #expect(settings.totalTimeout == .milliseconds(300))
        #expect(settings.breakerOpenDuration == .seconds(2))
        #expect(throws: (any Error).self) { try NotificationSettings(environment: ["WEBHOOK_ALLOW_PRIVATE_TARGETS": "yes"]) }
        #expect(throws: (any Error).self) { try NotificationSettings(environment: ["WEBHOOK_MAX_ATTEMPTS": "0"]) }
    }
}
