import Foundation
import Testing

@testable import Contracts

@Suite("Time-ordered ids (UUID version 7)")
struct TimeOrderedIDTests {
    /// Hands out fixed values, so an id's random bits are known.
    struct FixedBits: RandomNumberGenerator {
        var values: [UInt64]
        mutating func next() -> UInt64 { values.removeFirst() }
    }

    @Test func layoutMatchesRFC9562sExample() {
        // RFC 9562, appendix A.6: 2022-02-22 19:22:22 UTC, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F.
        var bits = FixedBits(values: [0xC30C_0000_0000_0000, 0x8F39_070C_0CDC_C498])
        let id = UUID.timeOrdered(at: Date(timeIntervalSince1970: 1_645_557_742), using: &bits)
        #expect(id.uuidString == "017F22E2-79B0-7CC3-98C4-DC0C0C07398F")
    }

    @Test func carriesVersion7AndTheRFCVariantWhateverTheRandomBits() {
        for fill in [UInt64.min, .max] {
            var bits = FixedBits(values: [fill, fill])
            let id = UUID.timeOrdered(at: Date(), using: &bits).uuid
            #expect(id.6 >> 4 == 7)
            #expect(id.8 >> 6 == 0b10)
        }
    }

    @Test func idsOfLaterMillisecondsSortLater() {
        // Half-way through each millisecond, where no rounding can move it to a neighbour.
        let ids = (0..<1000).map { UUID.timeOrdered(at: Date(timeIntervalSince1970: (1_764_000_000_000 + Double($0) + 0.5) / 1000)) }
        // PostgreSQL orders uuid values byte by byte, as their hex text sorts.
        #expect(ids.map(\.uuidString) == ids.map(\.uuidString).sorted())
        #expect(ids[0].uuidString.hasPrefix("019AB697-E800-7"))
    }

    @Test func idsOfOneMillisecondDifferInTheirRandomBits() {
        let now = Date()
        let ids = Set((0..<10_000).map { _ in UUID.timeOrdered(at: now) })
        #expect(ids.count == 10_000)
    }
}
