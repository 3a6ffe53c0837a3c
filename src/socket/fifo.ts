/**
 * Fifo: a first-in first-out queue that takes from the front in constant
 * time, for the inbox's items and waiting calls and the send queue's
 * pending messages.
 *
 * Array.prototype.shift() is a runtime call past about a hundred elements
 * (V8 trims the array's front), tens of nanoseconds per item on Node 26:
 * a batch of a thousand received messages paid that per message. Here the
 * front is an index; the array is compacted when the taken part is half
 * of it, so memory stays bounded by twice what is queued. An emptied queue
 * keeps up to 64 slots, so that one item at a time costs no array growth.
 *
 * Ownership: the queue holds references only; whoever took an item out (or
 * got it back from clear()) owns it.
 */
export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;
  /** One past the last item: the slots from here on are free (undefined). */
  #tail = 0;

  get length(): number {
    return this.#tail - this.#head;
  }

  push(item: T): void {
    const items = this.#items;
    if (this.#tail < items.length) items[this.#tail] = item;
    else items.push(item);
    this.#tail++;
  }

  /** The i-th item from the front (0: the next to be taken). */
  at(i: number): T | undefined {
    return this.#head + i < this.#tail ? this.#items[this.#head + i] : undefined;
  }

  /** Takes the front item (undefined when empty). */
  shift(): T | undefined {
    const items = this.#items;
    const h = this.#head;
    if (h >= this.#tail) return undefined;
    const item = items[h];
    items[h] = undefined;
    if (h + 1 === this.#tail) {
      // Empty now: start over at the front, no copy. A small array keeps its
      // slots (a queue of one item at a time then allocates nothing); a large
      // one is let go.
      if (items.length > SMALL) items.length = 0;
      this.#head = 0;
      this.#tail = 0;
    } else if (h + 1 >= 1024 && h + 1 >= items.length >> 1) {
      items.splice(0, h + 1);
      this.#tail -= h + 1;
      this.#head = 0;
    } else {
      this.#head = h + 1;
    }
    return item;
  }

  /** Takes `item` out from wherever it is (a waiter that gave up): whether
   * it was there. Linear: for short queues. */
  remove(item: T): boolean {
    const items = this.#items;
    for (let i = this.#head; i < this.#tail; i++) {
      if (items[i] !== item) continue;
      if (i === this.#head) this.shift();
      else {
        items.splice(i, 1);
        this.#tail--;
      }
      return true;
    }
    return false;
  }

  /** Takes every item, in order. */
  clear(): T[] {
    const out = this.#items.slice(this.#head, this.#tail) as T[];
    this.#items = [];
    this.#head = 0;
    this.#tail = 0;
    return out;
  }
}

/** Slots an emptied queue keeps for reuse. */
const SMALL = 64;
