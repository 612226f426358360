"""What a synced entity is: the declarative entity set (tables, columns, lines, flags) that
the database layer writes and the sync engine reads. Imports only services.core.

    entities  ENTITIES: one EntitySpec per QBO entity, get_spec, meta_updated, parse_time
"""

from services.model.entities import ENTITIES, ENTITY_NAMES, Column, EntitySpec, LineSpec, get_spec

__all__ = ["ENTITIES", "ENTITY_NAMES", "Column", "EntitySpec", "LineSpec", "get_spec"]
