"""The demo organisation: a slice of 广西壮族自治区 with ~40 staff, seeded on the first start.

Everything after the first administrator is created through the admin service, with the same
checks and audit entries as an administrator's own work. Every demo account shares the password
:data:`DEMO_PASSWORD`, printed at start-up: it is a demo, never for production (``XT_SEED_DEMO=false``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .access import Principal
from .admin.service import NewUnit, NewUser
from .audit.service import Origin
from .bootstrap import create_root_and_admin
from .models import utcnow
from .services import Services

DEMO_PASSWORD = "Xietong@2026"
SEED_MARK = "demo_seed"


@dataclass
class DemoUnit:
    key: str
    name: str
    level: str
    code: str | None = None
    hidden: bool = False
    staff: list[tuple[str, str, str]] = field(default_factory=list)  # (username, name, title)
    children: list["DemoUnit"] = field(default_factory=list)


DEMO_TREE = DemoUnit("gx", "广西壮族自治区", "province", "450000", children=[
    DemoUnit("gx.office", "自治区办公厅", "department", staff=[
        ("liyun", "李云", "主任"), ("zhouhui", "周慧", "副主任"), ("shanlei", "单磊", "秘书一处处长"),
        ("wangfang", "王芳", "秘书一处科员"), ("tanjie", "覃洁", "综合处科员"),
    ], children=[
        DemoUnit("gx.office.confidential", "机要室", "department", hidden=True, staff=[
            ("mengqiang", "蒙强", "机要室主任"), ("luoxue", "罗雪", "机要员"),
        ]),
    ]),
    DemoUnit("gx.emergency", "应急管理厅", "department", staff=[
        ("huangjian", "黄建", "厅长"), ("weiming", "韦明", "副厅长"), ("lanting", "蓝婷", "指挥中心主任"),
        ("mojun", "莫军", "值班员"), ("nongli", "农丽", "值班员"),
    ]),
    DemoUnit("gx.affairs", "机关事务管理局", "department", staff=[
        ("liangbo", "梁波", "局长"), ("chenhua", "陈华", "车辆管理科科长"), ("yangfan", "杨帆", "驾驶员"),
        ("zhaolei", "赵磊", "驾驶员"),
    ]),
    DemoUnit("nn", "南宁市", "city", "450100", children=[
        DemoUnit("nn.office", "南宁市人民政府办公室", "department", staff=[
            ("zhangwei", "张伟", "主任"), ("liuyang", "刘洋", "副主任"), ("chenjing", "陈静", "秘书科科长"),
            ("wuqiang", "吴强", "科员"), ("xuna", "徐娜", "科员"),
        ]),
        DemoUnit("nn.qingxiu", "青秀区", "county", "450103", children=[
            DemoUnit("nn.qingxiu.office", "青秀区人民政府办公室", "department", staff=[
                ("sunli", "孙丽", "主任"), ("hexin", "何欣", "副主任"), ("guoping", "郭平", "科员"),
                ("majie", "马杰", "科员"),
            ]),
        ]),
    ]),
    DemoUnit("lz", "柳州市", "city", "450200", children=[
        DemoUnit("lz.office", "柳州市人民政府办公室", "department", staff=[
            ("linfeng", "林峰", "主任"), ("luohong", "罗红", "副主任"), ("zengmin", "曾敏", "秘书科科长"),
            ("xiebin", "谢斌", "科员"), ("tangyu", "唐宇", "科员"),
        ]),
        DemoUnit("lz.chengzhong", "城中区", "county", "450202", staff=[
            ("fengtao", "冯涛", "区长"), ("dengyan", "邓燕", "办公室主任"), ("caoyu", "曹玉", "科员"),
        ]),
    ]),
])

# Administrators and auditors: (username, name, title, unit key, role).
DEMO_OFFICIALS = [
    ("nanning.admin", "南宁管理员", "信息化管理员", "nn", "unit_admin"),
    ("liuzhou.admin", "柳州管理员", "信息化管理员", "lz", "unit_admin"),
    ("gx.auditor", "审计员", "安全审计员", "gx", "auditor"),
]
DIRECTORY_HIDDEN = {"liyun"}  # a senior official not listed in the directory (Tchap-style)


async def seed_demo(services: Services) -> bool:
    """Seed the demo organisation into an empty installation; False if anything was there already."""
    if await services.store.users.count() > 0 or await services.store.meta.get(SEED_MARK):
        return False
    root, admin = await create_root_and_admin(
        services.store, services.audit, unit_name=DEMO_TREE.name, unit_level=DEMO_TREE.level,
        unit_code=DEMO_TREE.code, username="admin", display_name="系统管理员", password=DEMO_PASSWORD)
    me = Principal(admin.id, None)
    origin = Origin(ip="local", user_agent="xietong seed-demo")
    unit_ids = {DEMO_TREE.key: root.id}

    async def add(node: DemoUnit, parent_id: str, order: int) -> None:
        unit = await services.admin.create_unit(
            me, NewUnit(parent_id, node.name, node.level, order, node.code, node.hidden), origin)
        unit_ids[node.key] = unit.id
        for child_order, child in enumerate(node.children):
            await add(child, unit.id, child_order)

    for order, child in enumerate(DEMO_TREE.children):
        await add(child, root.id, order)

    def walk(node: DemoUnit):
        yield node
        for child in node.children:
            yield from walk(child)

    for node in walk(DEMO_TREE):
        for order, (username, name, title) in enumerate(node.staff):
            await services.admin.create_user(
                me, NewUser(username, name, unit_ids[node.key], title, order, _phone(username), DEMO_PASSWORD,
                            directory_hidden=username in DIRECTORY_HIDDEN), origin)
    for username, name, title, unit_key, role in DEMO_OFFICIALS:
        user, _ = await services.admin.create_user(
            me, NewUser(username, name, unit_ids[unit_key], title, 999, None, DEMO_PASSWORD), origin)
        await services.admin.set_role(me, user.id, role, unit_ids[unit_key], True, origin)
    # A cross-branch post (兼职): the emergency department's command-centre head also sits in Nanning's office.
    lanting = await services.store.users.get_by_username("lanting")
    assert lanting is not None
    await services.admin.set_membership(me, lanting.id, unit_ids["nn.office"], "应急联络员", 50, origin)
    await services.store.meta.claim(SEED_MARK, {"at": utcnow(), "password": DEMO_PASSWORD})
    return True


def _phone(username: str) -> str:
    # Stable, obviously fictitious office numbers.
    return f"0771-{5000000 + sum(map(ord, username)) * 37 % 1000000:07d}"


DEMO_ACCOUNTS = [
    ("admin", "system administrator (whole province)"),
    ("nanning.admin", "unit admin of 南宁市"),
    ("liuzhou.admin", "unit admin of 柳州市"),
    ("gx.auditor", "auditor of 广西壮族自治区"),
    ("zhangwei", "张伟, 南宁市人民政府办公室 主任"),
    ("huangjian", "黄建, 应急管理厅 厅长"),
]
