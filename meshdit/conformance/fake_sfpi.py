"""Stand-in for sfpi's riscv-tt-elf-g++, so ttnn's mock mode can start devices without the RISC-V toolchain.

ttnn JIT-builds firmware and kernels even for a mocked cluster. Mocked devices never execute them, but the build
must produce files ttnn's ELF loader accepts: a 32-bit little-endian RISC-V executable with 4-byte aligned
sections, a symbol table and a relocation section (ttnn "XIPifies" kernels by walking relocations). This script
answers `--version`, writes such an ELF for every `-o` and, when asked for dependency files (-MD/-MMD), writes one,
because ttnn hashes them to key its JIT cache. It is installed (with a shebang line prepended) by environment.py.
"""

import struct
import sys

EM_RISCV = 243
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 1, 2, 3, 4
SHF_ALLOC_EXEC, SHF_INFO_LINK = 0x6, 0x40


def minimal_elf() -> bytes:
    text = struct.pack("<I", 0x00000013) * 4  # four RISC-V nops
    strtab = b"\0_start\0"
    shstrtab = b"\0.text\0.symtab\0.strtab\0.rela.text\0.shstrtab\0"
    symtab = b"\0" * 16 + struct.pack("<IIIBBH", 1, 0, 0, 0x12, 0, 1)  # _start: global function in section 1
    sections = [(".text", text), (".symtab", symtab), (".strtab", strtab), (".rela.text", b""),
                (".shstrtab", shstrtab)]
    data_start = 52 + 32  # ELF header, then one program header
    body, where = b"", {}
    for name, data in sections:
        body += b"\0" * (-(data_start + len(body)) % 4)
        where[name] = (data_start + len(body), len(data))
        body += data
    body += b"\0" * (-(data_start + len(body)) % 4)
    section_table = data_start + len(body)

    def header(name, kind, flags, link=0, info=0, align=4, entsize=0):
        offset, size = where[name]
        return struct.pack("<IIIIIIIIII", shstrtab.index(name.encode()), kind, flags, 0, offset, size, link, info,
                           align, entsize)

    headers = struct.pack("<IIIIIIIIII", *([0] * 10))
    headers += header(".text", SHT_PROGBITS, SHF_ALLOC_EXEC)
    headers += header(".symtab", SHT_SYMTAB, 0, link=3, info=1, entsize=16)
    headers += header(".strtab", SHT_STRTAB, 0, align=1)
    headers += header(".rela.text", SHT_RELA, SHF_INFO_LINK, link=2, info=1, entsize=12)
    headers += header(".shstrtab", SHT_STRTAB, 0, align=1)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8  # 32-bit, little endian
    elf_header = ident + struct.pack("<HHIIIIIHHHHHH", 2, EM_RISCV, 1, 0, 52, section_table, 0, 52, 32, 1, 40,
                                     len(sections) + 1, len(sections))
    program_header = struct.pack("<IIIIIIII", 1, where[".text"][0], 0, 0, len(text), len(text), 5, 4)
    return elf_header + program_header + body + headers


def main(args) -> int:
    if "--version" in args or "-v" in args:
        print("riscv-tt-elf-g++ (meshdit stand-in for ttnn mock mode) 12.0.0")
        return 0
    if "-o" in args:
        output = args[args.index("-o") + 1]
        with open(output, "wb") as f:
            f.write(minimal_elf())
        if "-MD" in args or "-MMD" in args:
            depfile = args[args.index("-MF") + 1] if "-MF" in args else output.rsplit(".", 1)[0] + ".d"
            with open(depfile, "w") as f:
                f.write(output + ":\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
