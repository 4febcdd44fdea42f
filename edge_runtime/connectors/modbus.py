"""Modbus TCP devices (pymodbus): poll registers and coils, write for device_output.

A binding names, per property, where its value lives::

    registers:
      temperature: {table: holding, address: 0, type: int16, scale: 0.1}
      flow:        {table: input, address: 10, type: float32, word_order: little}
      running:     {table: coil, address: 0}

Tables: holding, input (16-bit registers), coil, discrete (bits). Types: int16,
uint16, int32, uint32, int64, uint64, float32, float64 (and bool for bits);
``byte_order`` (within a register) and ``word_order`` (between registers) are
big or little; value = raw * scale + offset. Each device polls on its own
thread, so a slow or dead device never delays the others. Timeouts, refused
connections and exception responses become dead letters and the poller retries
with backoff.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..backoff import Backoff
from ..operators.base import SpecError, parse_duration
from ..records import RecordError
from .base import BindingCheck, Connector, NodeContext, substitute

if TYPE_CHECKING:
    from ..devices.catalog import DeviceBinding, Product
    from ..metrics import ConnectorFamilies, Family

__all__ = ["ModbusConnector", "ModbusDevice", "Register", "check_registers", "decode", "encode"]

log = logging.getLogger("edgeloop.modbus")

TABLES = ("holding", "input", "coil", "discrete")
_FORMATS = {"int16": ("h", 1), "uint16": ("H", 1), "int32": ("i", 2), "uint32": ("I", 2),
            "int64": ("q", 4), "uint64": ("Q", 4), "float32": ("f", 2), "float64": ("d", 4)}


@dataclass(frozen=True)
class Register:
    prop: str
    table: str
    address: int
    type: str = "uint16"
    scale: float = 1.0
    offset: float = 0.0
    byte_order: str = "big"
    word_order: str = "big"

    @property
    def count(self) -> int:
        return 1 if self.table in ("coil", "discrete") else _FORMATS[self.type][1]


def decode(reg: Register, words: list[int]) -> float | int:
    """16-bit words as read -> the register's value (before scale)."""
    code, n = _FORMATS[reg.type]
    if len(words) != n:
        raise RecordError(f"expected {n} registers for {reg.type}, got {len(words)}")
    ordered = list(words) if reg.word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") if reg.byte_order == "big" else w.to_bytes(2, "little") for w in ordered)
    value: float | int = struct.unpack(">" + code, raw)[0]
    return value


def encode(reg: Register, value: float | int) -> list[int]:
    """The inverse of :func:`decode` (value before scale)."""
    code, n = _FORMATS[reg.type]
    if code in "fd":
        raw = struct.pack(">" + code, float(value))
    else:
        raw = struct.pack(">" + code, int(round(value)))
    words = []
    for i in range(n):
        chunk = raw[2 * i: 2 * i + 2]
        words.append(int.from_bytes(chunk, "big") if reg.byte_order == "big" else int.from_bytes(chunk, "little"))
    return words if reg.word_order == "big" else list(reversed(words))


def check_registers(options: dict[str, Any], product: Product) -> list[Register]:
    """Validate a modbus binding's options in place; returns its registers."""
    if not isinstance(options.get("host"), str) or not options["host"]:
        raise SpecError("expected the device's host name or address", field="host")
    port = options.setdefault("port", 502)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SpecError(f"expected a TCP port, got {port!r}", field="port")
    unit = options.setdefault("unit", 1)
    if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit <= 255:
        raise SpecError(f"expected a unit id 0..255, got {unit!r}", field="unit")
    options["interval"] = parse_duration(options.get("interval", 1.0), "interval")
    options["timeout"] = parse_duration(options.get("timeout", 1.0), "timeout")
    regs_raw = options.get("registers")
    if not isinstance(regs_raw, dict) or not regs_raw:
        raise SpecError("expected a mapping property -> {table, address, ...}", field="registers")
    regs = []
    for prop, spec in regs_raw.items():
        fld = f"registers.{prop}"
        if prop not in product.properties:
            raise SpecError(f"product '{product.name}' has no property {prop!r}", field=fld)
        if not isinstance(spec, dict):
            raise SpecError("expected {table, address, type, scale, ...}", field=fld)
        unknown = set(spec) - {"table", "address", "type", "scale", "offset", "byte_order", "word_order"}
        if unknown:
            raise SpecError(f"unknown key {sorted(unknown)[0]!r}", field=fld,
                            hint="table, address, type, scale, offset, byte_order, word_order")
        table = spec.get("table", "holding")
        if table not in TABLES:
            raise SpecError(f"expected one of {', '.join(TABLES)}, got {table!r}", field=f"{fld}.table")
        addr = spec.get("address")
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 65535:
            raise SpecError(f"expected an address 0..65535, got {addr!r}", field=f"{fld}.address")
        bits = table in ("coil", "discrete")
        rtype = spec.get("type", "bool" if bits else "uint16")
        if bits and rtype != "bool" or not bits and rtype not in _FORMATS:
            allowed = "bool" if bits else ", ".join(_FORMATS)
            raise SpecError(f"type {rtype!r} does not fit a {table} table (use {allowed})", field=f"{fld}.type")
        for key in ("byte_order", "word_order"):
            if spec.get(key, "big") not in ("big", "little"):
                raise SpecError(f"expected big or little, got {spec[key]!r}", field=f"{fld}.{key}")
        for key in ("scale", "offset"):
            v = spec.get(key, 1.0 if key == "scale" else 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (key == "scale" and v == 0):
                raise SpecError(f"expected a (non-zero for scale) number, got {v!r}", field=f"{fld}.{key}")
        regs.append(Register(prop, table, addr, rtype, float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0)),
                             spec.get("byte_order", "big"), spec.get("word_order", "big")))
    options["_registers"] = regs
    return regs


class ModbusDevice:
    """One Modbus TCP device: a poller thread and a lock-protected client for reads and writes."""

    def __init__(self, binding: DeviceBinding, product: Product, bus: Any) -> None:
        from pymodbus.client import ModbusTcpClient  # lazy: only nodes with Modbus devices load pymodbus

        self.binding = binding
        self.product = product
        self.bus = bus
        o = binding.options
        self.registers: list[Register] = o["_registers"]
        self.by_prop = {r.prop: r for r in self.registers}
        self.unit = o["unit"]
        self.interval = o["interval"]
        self.client: Any = ModbusTcpClient(o["host"], port=o["port"], timeout=o["timeout"], retries=0,
                                      reconnect_delay=0, reconnect_delay_max=0)
        self.lock = threading.Lock()
        self.polls = 0
        self.errors = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"modbus-{binding.id}", daemon=True)

    @property
    def source(self) -> str:
        o = self.binding.options
        return f"modbus:{o['host']}:{o['port']}/{self.unit}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self.lock:
            self.client.close()

    def _run(self) -> None:
        backoff, wait = Backoff(self.interval, 30.0), 0.0
        next_poll = time.monotonic()
        while not self._stop.is_set():
            delay = max(next_poll - time.monotonic(), wait)
            if delay > 0 and self._stop.wait(delay):
                return
            next_poll = time.monotonic() + self.interval
            if self.poll_once():
                backoff.reset()
                wait = 0.0
            else:
                wait = backoff.next()

    def poll_once(self) -> bool:
        """Read every register; submit one record. False when the device could not be reached."""
        values: dict[str, Any] = {}
        ts = time.time()
        self.polls += 1
        with self.lock:
            if not self.client.connected and not self.client.connect():
                self.connected = False
                self.errors += 1
                o = self.binding.options
                self.bus.dead(self.source, f"cannot connect to {o['host']}:{o['port']}", device=self.binding.id)
                return False
            self.connected = True
            for reg in self.registers:
                try:
                    values[reg.prop] = self.product.properties[reg.prop].check(self._read(reg))
                except RecordError as exc:
                    self.errors += 1
                    self.bus.dead(self.source, f"{reg.prop} ({reg.table} {reg.address}): {exc.reason}",
                                  device=self.binding.id)
                except Exception as exc:  # pymodbus raises ModbusException / ConnectionException / IOError
                    self.errors += 1
                    reason = _explain(exc, self.binding.options["timeout"])
                    self.bus.dead(self.source, f"{reg.prop} ({reg.table} {reg.address}): {reason}",
                                  device=self.binding.id)
                    if "timeout" in reason or "connection" in reason.lower():
                        self.client.close()
                        self.connected = False
                        break
        if values:
            self.bus.submit([{"device": self.binding.id, "product": self.product.name, "ts": ts, "values": values}])
        return self.connected

    def _read(self, reg: Register) -> Any:
        c, unit = self.client, self.unit
        if reg.table == "holding":
            rr = c.read_holding_registers(reg.address, count=reg.count, device_id=unit)
        elif reg.table == "input":
            rr = c.read_input_registers(reg.address, count=reg.count, device_id=unit)
        elif reg.table == "coil":
            rr = c.read_coils(reg.address, count=1, device_id=unit)
        else:
            rr = c.read_discrete_inputs(reg.address, count=1, device_id=unit)
        if rr.isError():
            raise RecordError(f"exception response {_exception_name(rr)}")
        if reg.table in ("coil", "discrete"):
            return bool(rr.bits[0])
        raw = decode(reg, list(rr.registers))
        value = raw * reg.scale + reg.offset
        if reg.scale == 1.0 and reg.offset == 0.0 and not isinstance(raw, float):
            return int(raw)
        return value

    def write(self, prop: str, value: Any) -> None:
        """Write a property (device_output). Raises RecordError with the reason on failure."""
        reg = self.by_prop.get(prop)
        if reg is None:
            raise RecordError(f"property {prop!r} of {self.binding.id} is not mapped to a register")
        if reg.table in ("input", "discrete"):
            raise RecordError(f"property {prop!r} lives in the read-only {reg.table} table")
        with self.lock:
            if not self.client.connected and not self.client.connect():
                raise RecordError(f"cannot connect to {self.source}")
            try:
                if reg.table == "coil":
                    rr = self.client.write_coil(reg.address, bool(value), device_id=self.unit)
                else:
                    words = encode(reg, (value - reg.offset) / reg.scale)
                    rr = self.client.write_registers(reg.address, words, device_id=self.unit)
            except Exception as exc:
                raise RecordError(_explain(exc, self.binding.options["timeout"])) from None
        if rr.isError():
            raise RecordError(f"exception response {_exception_name(rr)}")


def _exception_name(rr: Any) -> str:
    code = getattr(rr, "exception_code", None)
    names = {1: "IllegalFunction", 2: "IllegalDataAddress", 3: "IllegalDataValue", 4: "DeviceFailure",
             6: "DeviceBusy", 10: "GatewayPathUnavailable", 11: "GatewayTargetFailedToRespond"}
    return f"{code} ({names.get(code, 'unknown')})" if code is not None else str(rr)


def _explain(exc: Exception, timeout: float) -> str:
    text = str(exc)
    if "timeout" in text.lower() or "no response" in text.lower() or isinstance(exc, TimeoutError):
        return f"timeout: no answer within {timeout:g} s"
    return f"{type(exc).__name__}: {text}"


class ModbusConnector(Connector):
    """Modbus TCP devices: registers polled on an interval, properties and services written back."""

    name = "modbus"
    options: ClassVar[dict[str, str]] = {
        "host": "Modbus TCP host", "port": "TCP port (502)", "unit": "unit/device id (1)",
        "interval": "poll interval (1s)", "timeout": "request timeout (1s)",
        "registers": "property -> {table, address, type, scale, offset, byte_order, word_order}"}
    service_keys = frozenset({"write"})
    service_required = ("write",)
    idle_stats: ClassVar[Any] = {}

    @classmethod
    def check(cls, b: BindingCheck) -> None:
        try:
            check_registers(b.options, b.product)
        except SpecError as exc:  # named at the binding's key the field is under
            raise b.error(exc.problem, exc.field or "registers", at=(exc.field or "registers").split(".")[0],
                          hint=exc.hint) from None

    @classmethod
    def check_service(cls, b: BindingCheck, service: str, how: Any) -> Any:
        how = super().check_service(b, service, how)
        b.check_placeholders(service, how.get("write"))
        return how

    @classmethod
    def metric_families(cls, stats: Any, node: str, shared: ConnectorFamilies) -> list[Family]:
        from ..metrics import Family

        polls = Family("edgeloop_node_modbus_polls_total", "counter", "Modbus polls, by device.")
        errors = Family("edgeloop_node_modbus_errors_total", "counter", "Modbus poll errors, by device.")
        for dev, m in (stats or {}).items():
            polls.add(m.get("polls"), node=node, device=dev)
            errors.add(m.get("errors"), node=node, device=dev)
        return [polls, errors]

    def __init__(self, ctx: NodeContext, bindings: list[DeviceBinding]) -> None:
        super().__init__(ctx, bindings)
        self.devices = {b.id: ModbusDevice(b, ctx.catalog.products[b.product], ctx.bus) for b in bindings}

    def start(self) -> None:
        for d in self.devices.values():
            d.start()

    def stop(self) -> None:
        for d in self.devices.values():
            d.stop()

    def stats(self) -> dict[str, Any]:
        return {d: {"polls": m.polls, "errors": m.errors, "connected": m.connected} for d, m in self.devices.items()}

    def write(self, device: str, values: dict[str, Any]) -> None:
        for prop, value in values.items():
            self.devices[device].write(prop, value)

    def call_service(self, device: str, service: str, args: dict[str, Any], how: Any) -> None:
        if not how:
            super().call_service(device, service, args, how)  # raises: what the protocol cannot do
            return
        for prop, value in substitute(how["write"], args).items():
            self.devices[device].write(prop, value)
